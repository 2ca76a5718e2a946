/* runtime/fsutil.c — the classic write-temporary, fsync, rename, fsync-directory sequence.
 *
 * rename(2) within one directory is atomic: every observer sees the old name binding or the
 * new one. Syncing the temporary before the rename makes sure the name never points at data
 * that is not on disk yet; syncing the directory after it makes the new binding itself
 * durable. Each step that fails records what it was doing and errno; the temporary is then
 * unlinked, so a failure leaves nothing behind but the untouched previous file.
 */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool write_all(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        size_t chunk = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
        ssize_t k = write(fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        if (k == 0) {
            errno = EIO;
            return false;
        }
        p += k, len -= (size_t)k;
    }
    return true;
}

/* fsync the directory holding path; true when done or when the file system cannot. */
static bool sync_dir(const char *path, int *err_no)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) {
        dir = strdup(".");
    } else {
        size_t k = slash == path ? 1 : (size_t)(slash - path);
        dir = strndup(path, k);
    }
    if (!dir) {
        *err_no = ENOMEM;
        return false;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) {
        *err_no = errno;
        return false;
    }
    bool ok = true;
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) {
        *err_no = errno;
        ok = false;
    }
    close(fd);
    return ok;
}

bool dtl_fs_is_special(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) &&
           !S_ISLNK(st.st_mode);
}

/* A device or FIFO: written in place (there is nothing to replace atomically). */
static bool write_special(const char *path, const dtl_fs_piece *pieces, size_t n, dtl_err *err)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return dtl_err_set(err, DTL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++)
        ok = write_all(fd, pieces[i].data, pieces[i].len);
    int e = errno;
    close(fd);
    return ok || dtl_err_set(err, DTL_ERR_IO, "%s: cannot write: %s", path, strerror(e));
}

bool dtl_fs_write_atomic(const char *path, const dtl_fs_piece *pieces, size_t n, dtl_err *err)
{
    if (dtl_fs_is_special(path))
        return write_special(path, pieces, n, err);
    size_t plen = strlen(path);
    if (plen == 0 || path[plen - 1] == '/')
        return dtl_err_set(err, DTL_ERR_USAGE, "'%s': not a file name", path);
    size_t tsize = plen + 32;
    char *tmp = malloc(tsize);
    if (!tmp)
        return dtl_err_set(err, DTL_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, tsize, "%s.tmp-%ld", path, (long)getpid());

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        int e = errno;
        dtl_err_set(err, DTL_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp,
                    strerror(e));
        free(tmp);
        return false;
    }
    const char *failed = NULL;
    int e = 0;
    for (size_t i = 0; i < n && !failed; i++)
        if (!write_all(fd, pieces[i].data, pieces[i].len))
            failed = "cannot write temporary file", e = errno;
    if (!failed && fsync(fd) != 0)
        failed = "cannot sync temporary file", e = errno;
    if (close(fd) != 0 && !failed)
        failed = "cannot close temporary file", e = errno;
    if (!failed && rename(tmp, path) != 0)
        failed = "cannot rename over it the temporary file", e = errno;
    if (failed) {
        unlink(tmp);
        dtl_err_set(err, DTL_ERR_IO, "%s: %s %s: %s", path, failed, tmp, strerror(e));
        free(tmp);
        return false;
    }
    free(tmp);
    if (!sync_dir(path, &e))
        return dtl_err_set(err, DTL_ERR_IO,
                           "%s: written and renamed, but syncing its directory failed: %s",
                           path, strerror(e));
    return true;
}
