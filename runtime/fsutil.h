/* runtime/fsutil.h — durable, atomic replacement of a file (checkpoints).
 *
 * Contract: dtl_fs_write_atomic(path, pieces, n, err) writes the concatenation of pieces to
 * "<path>.tmp-<pid>" in path's own directory, fsyncs it, renames it over path and fsyncs
 * the directory. A reader of path, or a process that restarts after this one was killed at
 * any moment, sees either the previous file (or no file, if there was none) or the complete
 * new one, never a mix. Once it returns true the new file survives a power loss too (as far
 * as the file system honours fsync).
 *
 * On failure it returns false with a DTL_ERR_IO message naming path and the system's reason
 * (strerror), removes its temporary file, and leaves path as it was — except in one case the
 * message says: the rename succeeded but syncing the directory failed (path is then the new
 * file, not yet known to be durable).
 *
 * A process killed mid-write leaves its temporary file behind; it is never mistaken for
 * path, and the next write by a process of the same pid replaces it. Callers that list a
 * directory should ignore names containing ".tmp-". One writer per path per process at a
 * time (the temporary's name is per process). A symbolic link at path is replaced by the
 * file, not followed. The new file gets mode 0666 less the umask, like fopen's.
 *
 * A path that names something other than a regular file or a link — /dev/null, a FIFO, a
 * terminal — is written in place, never renamed over: `--save /dev/null` discards.
 * dtl_fs_is_special tells callers with their own writers (dtlc -o) the same.
 */
#ifndef DTL_FSUTIL_H
#define DTL_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

typedef struct dtl_fs_piece {
    const void *data;
    size_t len;
} dtl_fs_piece;

bool dtl_fs_write_atomic(const char *path, const dtl_fs_piece *pieces, size_t n, dtl_err *err);

/* Whether path exists and is neither a regular file, a directory nor a symbolic link (a
 * device, a FIFO, a socket): such a path must be opened and written, not replaced. */
bool dtl_fs_is_special(const char *path);

#endif
