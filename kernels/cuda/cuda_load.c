/* kernels/cuda/cuda_load.c — finds and loads the CUDA backend's plugin (kernels/cuda/cuda.h,
 * kernels/cuda/cuda_plugin.h). In libdtl.a; links no CUDA library.
 *
 * Design. The first call of any function of cuda.h loads the plugin, under pthread_once, into
 * one process-wide record (the plugin's table, its path, or why it could not be had): a
 * lazily initialized, thread-safe singleton, because a plugin is loaded once per process and
 * never unloaded (the stores' mirrors point into it). Candidates are tried in cuda.h's order;
 * the first that exists is the one loaded, and if it fails (dlopen's message, no entry
 * symbol, another build's ABI) that is the answer — no silent fallback to a different file.
 * dlopen uses RTLD_NOW | RTLD_LOCAL: a plugin with an unresolved symbol is refused at once,
 * with dlerror's message, and its symbols never interpose on dtl's. In a build without CUDA
 * (no HAVE_CUDA) nothing is looked for and every function says so.
 * DTL_CUDA_PLUGIN_BUILD (the build directory's plugin), DTL_CUDA_BUILD_DIR and
 * DTL_CUDA_PLUGIN_INSTALLED come from Makefile.am. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "cuda.h"
#include "cuda_dp.h"

#include <stdio.h>
#include <string.h>

#ifdef HAVE_CUDA
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "cuda_plugin.h"

#ifndef DTL_CUDA_PLUGIN_BUILD
#define DTL_CUDA_PLUGIN_BUILD ""
#define DTL_CUDA_BUILD_DIR ""
#endif
#ifndef DTL_CUDA_PLUGIN_INSTALLED
#define DTL_CUDA_PLUGIN_INSTALLED ""
#endif

typedef struct loader {
    const dtl_cuda_plugin *pl;   /* NULL: not loaded, why says why */
    char path[PATH_MAX];
    char why[480];
} loader;

static loader the_loader;
static pthread_once_t the_loader_once = PTHREAD_ONCE_INIT;

/* The store is dtl's: the plugin handles it through these (cuda_plugin.h). */
static const dtl_cuda_host the_host = {
    .store_find = dtl_store_find,
    .store_bind = dtl_store_bind,
    .store_seed = dtl_store_seed,
    .store_mirror_set = dtl_store_mirror_set,
    .store_mirror_get = dtl_store_mirror_get,
};

/* Loads the plugin at path into L (true), or says why not in L->why. */
static bool load(loader *L, const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(L->why, sizeof L->why, "cannot load the CUDA plugin: %s", e ? e : path);
        return false;
    }
    void *sym = dlsym(h, DTL_CUDA_PLUGIN_ENTRY);
    if (!sym) {
        snprintf(L->why, sizeof L->why, "%.300s is not dtl's CUDA plugin (it has no %s)", path,
                 DTL_CUDA_PLUGIN_ENTRY);
        return false;
    }
    dtl_cuda_plugin_entry_fn *entry;
    memcpy(&entry, &sym, sizeof entry);   /* (POSIX: dlsym's pointer is the function's) */
    char abi[300], why[400] = "";
    dtl_cuda_abi(abi, sizeof abi);
    const dtl_cuda_plugin *pl = entry(abi, &the_host, why, sizeof why);
    if (!pl || strcmp(pl->abi, abi) != 0) {
        snprintf(L->why, sizeof L->why, "the CUDA plugin %.200s was built for another dtl: %s",
                 path, pl ? pl->abi : why);
        return false;
    }
    L->pl = pl;
    snprintf(L->path, sizeof L->path, "%s", path);
    return true;
}

/* Whether the running program lies under dir (both resolved). */
static bool exe_under(const char *exe, const char *dir)
{
    char real[PATH_MAX];
    if (!*dir || !realpath(dir, real))
        return false;
    size_t n = strlen(real);
    return strncmp(exe, real, n) == 0 && exe[n] == '/';
}

static void load_once(void)
{
    loader *L = &the_loader;
    const char *env = getenv("DTL_CUDA_PLUGIN");
    if (env && *env) {
        if (!load(L, env))
            snprintf(L->why + strlen(L->why), sizeof L->why - strlen(L->why),
                     " (from DTL_CUDA_PLUGIN)");
    } else {
        char exe[PATH_MAX], cand[3][PATH_MAX + 32];
        int ncand = 0;
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            snprintf(cand[ncand++], sizeof cand[0], "%.*s/%s", (int)(slash - exe), exe,
                     DTL_CUDA_PLUGIN_FILE);
        }
        if (*exe && exe_under(exe, DTL_CUDA_BUILD_DIR))
            snprintf(cand[ncand++], sizeof cand[0], "%s", DTL_CUDA_PLUGIN_BUILD);
        if (*DTL_CUDA_PLUGIN_INSTALLED)
            snprintf(cand[ncand++], sizeof cand[0], "%s", DTL_CUDA_PLUGIN_INSTALLED);
        int i = 0;
        while (i < ncand && access(cand[i], F_OK) != 0)
            i++;
        if (i < ncand) {
            load(L, cand[i]);
        } else {
            int at = snprintf(L->why, sizeof L->why, "no CUDA plugin (%s) found: looked at",
                              DTL_CUDA_PLUGIN_FILE);
            for (int k = 0; k < ncand && at > 0 && (size_t)at < sizeof L->why; k++)
                at += snprintf(L->why + at, sizeof L->why - (size_t)at, "%s %.150s",
                               k ? "," : "", cand[k]);
            if (at > 0 && (size_t)at < sizeof L->why)
                snprintf(L->why + at, sizeof L->why - (size_t)at,
                         "; set DTL_CUDA_PLUGIN to its path");
        }
    }
    const char *v = getenv("DTL_CUDA_VERBOSE");
    if (v && *v && strcmp(v, "0") != 0) {
        if (L->pl)
            fprintf(stderr, "dtl cuda: plugin %s\n", L->path);
        else
            fprintf(stderr, "dtl cuda: %s\n", L->why);
    }
}

static const dtl_cuda_plugin *plugin(const char **why)
{
    pthread_once(&the_loader_once, load_once);
    *why = the_loader.why;
    return the_loader.pl;
}

const dtl_backend *dtl_cuda_backend(dtl_err *err)
{
    const char *why;
    const dtl_cuda_plugin *pl = plugin(&why);
    if (!pl) {
        dtl_err_set(err, DTL_ERR_USAGE, "%s", why);
        return NULL;
    }
    return pl->backend;
}

bool dtl_cuda_available(char *why, size_t len)
{
    const char *lwhy;
    const dtl_cuda_plugin *pl = plugin(&lwhy);
    if (!pl) {
        if (why && len)
            snprintf(why, len, "%s", lwhy);
        return false;
    }
    return pl->available(why, len);
}

bool dtl_cuda_fusable(const dtl_graph *g, char *why, size_t len)
{
    const char *lwhy;
    const dtl_cuda_plugin *pl = plugin(&lwhy);
    if (!pl) {
        if (why && len)
            snprintf(why, len, "%s", lwhy);
        return false;
    }
    return pl->fusable(g, why, len);
}

const char *dtl_cuda_plugin_path(void)
{
    const char *why;
    return plugin(&why) ? the_loader.path : NULL;
}

void *dtl_cuda_host_alloc(size_t bytes, dtl_err *err)
{
    const char *lwhy;
    const dtl_cuda_plugin *pl = plugin(&lwhy);
    if (!pl) {
        dtl_err_set(err, DTL_ERR_USAGE, "%s", lwhy);
        return NULL;
    }
    char why[300];
    void *p = pl->host_alloc(bytes, why, sizeof why);
    if (!p)
        dtl_err_set(err, DTL_ERR_NOMEM, "page-locked host memory (%zu bytes): %s", bytes, why);
    return p;
}

void dtl_cuda_host_free(void *p)
{
    const char *why;
    const dtl_cuda_plugin *pl = p ? plugin(&why) : NULL;
    if (pl)
        pl->host_free(p);
}

const dtl_cuda_dp_api *dtl_cuda_dp_get(char *why, size_t len)
{
    const char *lwhy;
    const dtl_cuda_plugin *pl = plugin(&lwhy);
    if (!pl && why && len)
        snprintf(why, len, "%s", lwhy);
    return pl ? pl->dp : NULL;
}

#else /* no CUDA in this build */

#define NO_CUDA "this build has no CUDA (./configure --with-cuda on a machine with the CUDA toolkit)"

const dtl_backend *dtl_cuda_backend(dtl_err *err)
{
    dtl_err_set(err, DTL_ERR_USAGE, "%s", NO_CUDA);
    return NULL;
}

bool dtl_cuda_available(char *why, size_t len)
{
    if (why && len)
        snprintf(why, len, "%s", NO_CUDA);
    return false;
}

bool dtl_cuda_fusable(const dtl_graph *g, char *why, size_t len)
{
    (void)g;
    if (why && len)
        snprintf(why, len, "%s", NO_CUDA);
    return false;
}

const char *dtl_cuda_plugin_path(void)
{
    return NULL;
}

void *dtl_cuda_host_alloc(size_t bytes, dtl_err *err)
{
    (void)bytes;
    dtl_err_set(err, DTL_ERR_USAGE, "%s", NO_CUDA);
    return NULL;
}

void dtl_cuda_host_free(void *p)
{
    (void)p;
}

const dtl_cuda_dp_api *dtl_cuda_dp_get(char *why, size_t len)
{
    if (why && len)
        snprintf(why, len, "%s", NO_CUDA);
    return NULL;
}

#endif
