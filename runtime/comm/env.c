/* runtime/comm/env.c — who am I: rank identity from the launcher's environment.
 *
 * Design: one pure function over an environment table, so every launcher's convention is a
 * test case (tests/unit/test_comm_env.c) rather than a cluster to find. Each source is tried
 * in the contract's order and the first whose rank and size variables are both present
 * wins (a lone RANK is too common a name to mean torchrun); our own DTL_ variables, when
 * only half set, are an error instead. Numbers are strict decimal. The coordinator port, when
 * no variable gives it, is derived from the job id so that two jobs sharing a host do not
 * collide on one port.
 */
#include "comm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static const char *env_get(const char *const *envp, const char *key)
{
    size_t n = strlen(key);
    for (const char *const *e = envp; e && *e; e++)
        if (strncmp(*e, key, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

/* A decimal integer in [lo, hi]. */
static bool parse_int(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s)
        return false;
    long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
        if (v > hi)
            return false;
    }
    if (v < lo)
        return false;
    *out = v;
    return true;
}

static bool get_int(const char *const *envp, const char *key, long lo, long hi, long *out,
                    dtl_err *err)
{
    const char *s = env_get(envp, key);
    if (!parse_int(s, lo, hi, out))
        return dtl_err_set(err, DTL_ERR_USAGE, "%s='%s': expected an integer in [%ld, %ld]", key,
                           s ? s : "", lo, hi);
    return true;
}

bool dtl_comm_parse_hostport(const char *s, const char *what, char *host, size_t cap,
                             int *port, dtl_err *err)
{
    const char *colon, *h = s;
    size_t hn;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            goto bad;
        h = s + 1;
        hn = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            goto bad;
        hn = (size_t)(colon - s);
    }
    long p;
    if (hn == 0 || !parse_int(colon + 1, 1, 65535, &p))
        goto bad;
    if (hn >= cap)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s='%s': the host name is too long", what, s);
    memcpy(host, h, hn);
    host[hn] = 0;
    *port = (int)p;
    return true;
bad:
    return dtl_err_set(err, DTL_ERR_USAGE,
                       "%s='%s': expected host:port (a port in 1..65535; [addr]:port for IPv6)",
                       what, s);
}

bool dtl_comm_nodelist_first(const char *list, char *out, size_t cap, dtl_err *err)
{
    /* The first top-level item of the comma-separated list; each [..] group is replaced by the
     * first element of its own list, as written (leading zeros kept: node[01-04] -> node01). */
    size_t n = 0;
    const char *p = list;
    if (!*p || *p == ',')
        goto bad;
    while (*p && *p != ',') {
        if (*p == ']')
            goto bad;
        if (*p == '[') {
            const char *q = ++p;
            while (*q >= '0' && *q <= '9')
                q++;
            if (q == p)
                goto bad;
            size_t dn = (size_t)(q - p);
            if (n + dn >= cap)
                goto long_;
            memcpy(out + n, p, dn);
            n += dn;
            /* The rest of the group must be well-formed: digits, '-' and ',' up to ']'. */
            while (*q && *q != ']') {
                if (!((*q >= '0' && *q <= '9') || *q == '-' || *q == ','))
                    goto bad;
                q++;
            }
            if (*q != ']')
                goto bad;
            p = q + 1;
            continue;
        }
        if (n + 1 >= cap)
            goto long_;
        out[n++] = *p++;
    }
    if (n == 0)
        goto bad;
    out[n] = 0;
    return true;
bad:
    return dtl_err_set(err, DTL_ERR_USAGE, "malformed Slurm node list '%s'", list);
long_:
    return dtl_err_set(err, DTL_ERR_USAGE, "Slurm node list '%s': the first host name is too long",
                       list);
}

/* FNV-1a of a job id string, for a port in [20000, 60000). */
static int port_from_job(const char *id)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return 20000 + (int)(h % 40000);
}

/* The port when the source gives none: DTL_PORT, else from the job id, else the default. */
static bool default_port(const char *const *envp, const char *jobid, int *port, dtl_err *err)
{
    if (env_get(envp, "DTL_PORT")) {
        long p;
        if (!get_int(envp, "DTL_PORT", 1, 65535, &p, err))
            return false;
        *port = (int)p;
    } else if (jobid && *jobid) {
        *port = port_from_job(jobid);
    } else {
        *port = DTL_COMM_DEFAULT_PORT;
    }
    return true;
}

static bool set_host(dtl_comm_env *out, const char *h, dtl_err *err)
{
    if (strlen(h) >= sizeof out->host)
        return dtl_err_set(err, DTL_ERR_USAGE, "coordinator host name '%.40s…' is too long", h);
    strcpy(out->host, h);
    return true;
}

/* Rank and size from the variables rk and sz; false (no error) when either is absent. */
static bool try_source(const char *const *envp, const char *rk, const char *sz, long *rank,
                       long *size, bool *found, dtl_err *err)
{
    *found = env_get(envp, rk) && env_get(envp, sz);
    if (!*found)
        return true;
    if (!get_int(envp, sz, 1, DTL_COMM_MAX_WORLD, size, err) ||
        !get_int(envp, rk, 0, DTL_COMM_MAX_WORLD - 1, rank, err))
        return false;
    if (*rank >= *size)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s=%ld is not below %s=%ld", rk, *rank, sz, *size);
    return true;
}

static void get_local(const char *const *envp, const char *key, dtl_comm_env *out)
{
    long v;
    if (key && parse_int(env_get(envp, key), 0, DTL_COMM_MAX_WORLD - 1, &v))
        out->local_rank = (int)v;
}

/* Whether every rank is on this host, as the launcher's local-size variable says. */
static bool all_local(const char *const *envp, const char *local_size_key, long size)
{
    long v;
    return parse_int(env_get(envp, local_size_key), 1, DTL_COMM_MAX_WORLD, &v) && v == size;
}

static bool read_common(const char *const *envp, dtl_comm_env *out, dtl_err *err)
{
    const char *t = env_get(envp, "DTL_TIMEOUT");
    out->timeout_s = DTL_COMM_DEFAULT_TIMEOUT;
    if (t) {
        char *end;
        errno = 0;
        double v = strtod(t, &end);
        if (!*t || *end || errno || !(v > 0) || v > 1e6)
            return dtl_err_set(err, DTL_ERR_USAGE,
                               "DTL_TIMEOUT='%s': expected a positive number of seconds", t);
        out->timeout_s = v;
    }
    const char *p = env_get(envp, "DTL_FABRIC_PROVIDER");
    out->provider_is_fi = false;
    if (!p || !*p) {
        p = env_get(envp, "FI_PROVIDER");
        out->provider_is_fi = p && *p;
    }
    if (p && strlen(p) >= sizeof out->provider)
        return dtl_err_set(err, DTL_ERR_USAGE, "%s='%s': too long",
                           out->provider_is_fi ? "FI_PROVIDER" : "DTL_FABRIC_PROVIDER", p);
    snprintf(out->provider, sizeof out->provider, "%s", p ? p : "");
    const char *i = env_get(envp, "DTL_FABRIC_IFACE");
    if (i && strlen(i) >= sizeof out->iface)
        return dtl_err_set(err, DTL_ERR_USAGE, "DTL_FABRIC_IFACE='%s': too long", i);
    snprintf(out->iface, sizeof out->iface, "%s", i ? i : "");
    /* The job: ranks of different jobs that meet on one port must not join each other. */
    const char *j = env_get(envp, "DTL_JOB_ID");
    if (!j)
        j = env_get(envp, "TORCHELASTIC_RUN_ID");
    const char *sj = env_get(envp, "SLURM_JOB_ID"), *ss = env_get(envp, "SLURM_STEP_ID");
    if (!j && sj) {
        snprintf(out->job, sizeof out->job, "slurm:%.40s.%.40s", sj, ss ? ss : "");
        return true;
    }
    if (!j)
        j = env_get(envp, "OMPI_MCA_ess_base_jobid");
    if (!j)
        j = env_get(envp, "PMIX_NAMESPACE");
    if (!j)
        j = env_get(envp, "PMI_JOBID");
    snprintf(out->job, sizeof out->job, "%s", j ? j : "");
    return true;
}

bool dtl_comm_env_resolve(const char *const *envp, dtl_comm_env *out, dtl_err *err)
{
    memset(out, 0, sizeof *out);
    out->local_rank = -1;
    out->source = "none";
    out->size = 1;
    if (!read_common(envp, out, err))
        return false;

    long rank = 0, size = 1;
    bool found;
    const char *coord = env_get(envp, "DTL_COORDINATOR");

    /* 1. Ours: both or neither. */
    if (env_get(envp, "DTL_RANK") || env_get(envp, "DTL_WORLD_SIZE")) {
        if (!env_get(envp, "DTL_RANK") || !env_get(envp, "DTL_WORLD_SIZE"))
            return dtl_err_set(err, DTL_ERR_USAGE, "%s is set but %s is not: set both",
                               env_get(envp, "DTL_RANK") ? "DTL_RANK" : "DTL_WORLD_SIZE",
                               env_get(envp, "DTL_RANK") ? "DTL_WORLD_SIZE" : "DTL_RANK");
        if (!try_source(envp, "DTL_RANK", "DTL_WORLD_SIZE", &rank, &size, &found, err))
            return false;
        out->source = "DTL";
        get_local(envp, "DTL_LOCAL_RANK", out);
        if (size > 1 && !coord)
            return dtl_err_set(err, DTL_ERR_USAGE,
                               "DTL_WORLD_SIZE=%ld needs DTL_COORDINATOR=host:port (rank 0's host)",
                               size);
        goto done;
    }
    /* 2. torchrun. */
    if (!try_source(envp, "RANK", "WORLD_SIZE", &rank, &size, &found, err))
        return false;
    if (found) {
        out->source = "torchrun";
        get_local(envp, "LOCAL_RANK", out);
        if (size > 1 && !coord) {
            const char *a = env_get(envp, "MASTER_ADDR"), *p = env_get(envp, "MASTER_PORT");
            if (!a || !*a || !p)
                return dtl_err_set(err, DTL_ERR_USAGE,
                                   "RANK/WORLD_SIZE (torchrun) need MASTER_ADDR and MASTER_PORT, "
                                   "or DTL_COORDINATOR=host:port");
            long port;
            if (!get_int(envp, "MASTER_PORT", 1, 65535, &port, err) || !set_host(out, a, err))
                return false;
            out->port = (int)port;
        }
        goto done;
    }
    /* 3. Open MPI. */
    if (!try_source(envp, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", &rank, &size, &found,
                    err))
        return false;
    if (found) {
        out->source = "Open MPI";
        get_local(envp, "OMPI_COMM_WORLD_LOCAL_RANK", out);
        if (size > 1 && !coord) {
            if (!all_local(envp, "OMPI_COMM_WORLD_LOCAL_SIZE", size))
                return dtl_err_set(err, DTL_ERR_USAGE,
                                   "Open MPI ranks on several hosts: set DTL_COORDINATOR=host:port "
                                   "(the host of rank 0), e.g. mpirun -x DTL_COORDINATOR=…");
            const char *job = env_get(envp, "OMPI_MCA_ess_base_jobid");
            if (!job)
                job = env_get(envp, "PMIX_NAMESPACE");
            strcpy(out->host, "127.0.0.1");
            if (!default_port(envp, job, &out->port, err))
                return false;
        }
        goto done;
    }
    /* 4. PMI (MPICH's hydra and others). */
    if (!try_source(envp, "PMI_RANK", "PMI_SIZE", &rank, &size, &found, err))
        return false;
    if (found) {
        out->source = "PMI";
        get_local(envp, "MPI_LOCALRANKID", out);
        if (size > 1 && !coord) {
            if (!all_local(envp, "MPI_LOCALNRANKS", size))
                return dtl_err_set(err, DTL_ERR_USAGE,
                                   "PMI ranks not known to share this host: set "
                                   "DTL_COORDINATOR=host:port (the host of rank 0)");
            strcpy(out->host, "127.0.0.1");
            if (!default_port(envp, env_get(envp, "PMI_JOBID"), &out->port, err))
                return false;
        }
        goto done;
    }
    /* 5. Slurm, inside an srun step only (a batch script also has SLURM_PROCID=0). */
    if (env_get(envp, "SLURM_STEP_ID") || env_get(envp, "SLURM_STEPID")) {
        if (!try_source(envp, "SLURM_PROCID", "SLURM_NTASKS", &rank, &size, &found, err))
            return false;
        if (found) {
            out->source = "Slurm";
            get_local(envp, "SLURM_LOCALID", out);
            if (size > 1 && !coord) {
                const char *nl = env_get(envp, "SLURM_STEP_NODELIST");
                const char *key = "SLURM_STEP_NODELIST";
                if (!nl || !*nl) {
                    nl = env_get(envp, "SLURM_JOB_NODELIST");
                    key = "SLURM_JOB_NODELIST";
                }
                if (!nl || !*nl)
                    return dtl_err_set(err, DTL_ERR_USAGE,
                                       "Slurm: no SLURM_STEP_NODELIST or SLURM_JOB_NODELIST; set "
                                       "DTL_COORDINATOR=host:port");
                dtl_err e2;
                if (!dtl_comm_nodelist_first(nl, out->host, sizeof out->host, &e2))
                    return dtl_err_set(err, DTL_ERR_USAGE, "%s: %s", key, e2.msg);
                char job[64];
                const char *j = env_get(envp, "SLURM_JOB_ID"), *s = env_get(envp, "SLURM_STEP_ID");
                if (!s)
                    s = env_get(envp, "SLURM_STEPID");
                snprintf(job, sizeof job, "%.30s.%.30s", j ? j : "", s ? s : "");
                if (!default_port(envp, j ? job : NULL, &out->port, err))
                    return false;
            }
            goto done;
        }
    }
    /* 6. Nothing: one process. */
    rank = 0;
    size = 1;
done:
    out->rank = (int)rank;
    out->size = (int)size;
    if (out->size > 1 && coord) {
        if (!dtl_comm_parse_hostport(coord, "DTL_COORDINATOR", out->host, sizeof out->host,
                                     &out->port, err))
            return false;
    }
    if (out->size == 1) {
        out->host[0] = 0;
        out->port = 0;
    }
    return true;
}

char *dtl_comm_sig(char *buf, size_t cap, const char *coll, size_t count, dtl_dtype t,
                   dtl_comm_op op, const char *label)
{
    bool reduces = strcmp(coll, "allreduce") == 0 || strcmp(coll, "reduce_scatter") == 0;
    const char *ops[] = {"sum", "mean", "max"};
    snprintf(buf, cap, "%s %s[%zu]%s%s%s%s", coll, dtl_dtype_name(t), count, reduces ? " " : "",
             reduces ? ops[op] : "", label ? " @ " : "", label ? label : "");
    return buf;
}

bool dtl_comm_env_from_environ(dtl_comm_env *out, dtl_err *err)
{
    return dtl_comm_env_resolve((const char *const *)environ, out, err);
}
