/* tests/unit/test_comm_env.c — runtime/comm/env.c: rank identity from each launcher's
 * environment (tables, not this process's environment), the order of precedence, the
 * coordinator's defaults, malformed values named, Slurm node lists and host:port parsing. */
#include "../../runtime/comm/comm.h"
#include "unit.h"

#include <math.h>

/* Resolves a table; returns whether it succeeded (the env or the error into *e / *err). */
static bool resolve(const char *const *envp, dtl_comm_env *e, dtl_err *err)
{
    err->msg[0] = 0;
    return dtl_comm_env_resolve(envp, e, err);
}

static void test_sources(void)
{
    dtl_comm_env e;
    dtl_err err;

    const char *none[] = {"HOME=/root", "PATH=/bin", NULL};
    CHECK(resolve(none, &e, &err));
    CHECK(e.rank == 0 && e.size == 1 && e.local_rank == -1 && e.port == 0 && !e.host[0]);
    CHECK_STR(e.source, "none");
    CHECK(e.timeout_s == 30.0 && !e.provider[0] && !e.iface[0]);
    CHECK(resolve(NULL, &e, &err) && e.size == 1);

    const char *dtl[] = {"DTL_RANK=2", "DTL_WORLD_SIZE=4", "DTL_COORDINATOR=node7:1234",
                         "DTL_LOCAL_RANK=0", "RANK=9", "WORLD_SIZE=16", NULL};
    CHECK(resolve(dtl, &e, &err));
    CHECK(e.rank == 2 && e.size == 4 && e.local_rank == 0 && e.port == 1234);
    CHECK_STR(e.host, "node7");
    CHECK_STR(e.source, "DTL");

    const char *torch[] = {"RANK=3", "WORLD_SIZE=8", "LOCAL_RANK=1", "MASTER_ADDR=10.0.0.5",
                           "MASTER_PORT=29400", "OMPI_COMM_WORLD_RANK=0",
                           "OMPI_COMM_WORLD_SIZE=2", NULL};
    CHECK(resolve(torch, &e, &err));
    CHECK(e.rank == 3 && e.size == 8 && e.local_rank == 1 && e.port == 29400);
    CHECK_STR(e.host, "10.0.0.5");
    CHECK_STR(e.source, "torchrun");

    /* DTL_COORDINATOR overrides MASTER_ADDR/PORT. */
    const char *torch2[] = {"RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=a", "MASTER_PORT=1",
                            "DTL_COORDINATOR=[::1]:5000", NULL};
    CHECK(resolve(torch2, &e, &err));
    CHECK_STR(e.host, "::1");
    CHECK(e.port == 5000);

    /* A lone RANK (no WORLD_SIZE) is not torchrun: the next source decides. */
    const char *ompi[] = {"RANK=5", "OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE=4",
                          "OMPI_COMM_WORLD_LOCAL_RANK=1", "OMPI_COMM_WORLD_LOCAL_SIZE=4",
                          "PMI_RANK=0", "PMI_SIZE=9", NULL};
    CHECK(resolve(ompi, &e, &err));
    CHECK(e.rank == 1 && e.size == 4 && e.local_rank == 1);
    CHECK_STR(e.source, "Open MPI");
    CHECK_STR(e.host, "127.0.0.1");
    CHECK(e.port == DTL_COMM_DEFAULT_PORT);

    /* The port follows the job id (two jobs on one host), or DTL_PORT. */
    const char *ompi_job[] = {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=2",
                              "OMPI_COMM_WORLD_LOCAL_SIZE=2", "OMPI_MCA_ess_base_jobid=123", NULL};
    const char *ompi_job2[] = {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=2",
                               "OMPI_COMM_WORLD_LOCAL_SIZE=2", "OMPI_MCA_ess_base_jobid=124", NULL};
    dtl_comm_env e2;
    CHECK(resolve(ompi_job, &e, &err) && resolve(ompi_job2, &e2, &err));
    CHECK(e.port >= 20000 && e.port < 60000 && e2.port >= 20000 && e.port != e2.port);
    const char *ompi_port[] = {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=2",
                               "OMPI_COMM_WORLD_LOCAL_SIZE=2", "OMPI_MCA_ess_base_jobid=123",
                               "DTL_PORT=4444", NULL};
    CHECK(resolve(ompi_port, &e, &err) && e.port == 4444);

    /* Open MPI across hosts needs a coordinator. */
    const char *ompi_multi[] = {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=4",
                                "OMPI_COMM_WORLD_LOCAL_SIZE=2", NULL};
    CHECK(!resolve(ompi_multi, &e, &err) && err.kind == DTL_ERR_USAGE);
    CHECK(strstr(err.msg, "DTL_COORDINATOR") != NULL);
    const char *ompi_multi2[] = {"OMPI_COMM_WORLD_RANK=3", "OMPI_COMM_WORLD_SIZE=4",
                                 "OMPI_COMM_WORLD_LOCAL_SIZE=2", "DTL_COORDINATOR=h0:7000", NULL};
    CHECK(resolve(ompi_multi2, &e, &err) && e.rank == 3 && e.port == 7000);

    const char *pmi[] = {"PMI_RANK=2", "PMI_SIZE=3", "MPI_LOCALRANKID=2", "MPI_LOCALNRANKS=3",
                         "SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_STEP_ID=0", NULL};
    CHECK(resolve(pmi, &e, &err));
    CHECK(e.rank == 2 && e.size == 3 && e.local_rank == 2);
    CHECK_STR(e.source, "PMI");
    CHECK_STR(e.host, "127.0.0.1");
    const char *pmi_multi[] = {"PMI_RANK=2", "PMI_SIZE=3", NULL};
    CHECK(!resolve(pmi_multi, &e, &err) && strstr(err.msg, "DTL_COORDINATOR"));

    const char *slurm[] = {"SLURM_PROCID=5", "SLURM_NTASKS=8", "SLURM_LOCALID=1",
                           "SLURM_STEP_ID=0", "SLURM_JOB_ID=4242",
                           "SLURM_JOB_NODELIST=gpu[07-10,12],login1", NULL};
    CHECK(resolve(slurm, &e, &err));
    CHECK(e.rank == 5 && e.size == 8 && e.local_rank == 1);
    CHECK_STR(e.source, "Slurm");
    CHECK_STR(e.host, "gpu07");
    CHECK(e.port >= 20000 && e.port < 60000);
    /* The step's node list wins over the job's. */
    const char *slurm_step[] = {"SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_STEPID=3",
                                "SLURM_JOB_NODELIST=a[1-9]", "SLURM_STEP_NODELIST=b[3-4]", NULL};
    CHECK(resolve(slurm_step, &e, &err));
    CHECK_STR(e.host, "b3");
    CHECK(e.port == DTL_COMM_DEFAULT_PORT);   /* no SLURM_JOB_ID */
    /* A batch script (no step) is one process, not rank 0 of SLURM_NTASKS. */
    const char *slurm_batch[] = {"SLURM_PROCID=0", "SLURM_NTASKS=8",
                                 "SLURM_JOB_NODELIST=n[1-2]", NULL};
    CHECK(resolve(slurm_batch, &e, &err) && e.size == 1);
    CHECK_STR(e.source, "none");
    const char *slurm_bad[] = {"SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_STEP_ID=0",
                               "SLURM_JOB_NODELIST=n[1-2", NULL};
    CHECK(!resolve(slurm_bad, &e, &err) && strstr(err.msg, "SLURM_JOB_NODELIST"));

    /* World of one from a launcher: no coordinator needed. */
    const char *one[] = {"RANK=0", "WORLD_SIZE=1", NULL};
    CHECK(resolve(one, &e, &err) && e.size == 1 && !e.host[0] && e.port == 0);
}

static void test_errors(void)
{
    dtl_comm_env e;
    dtl_err err;
    const char *half[] = {"DTL_RANK=0", NULL};
    CHECK(!resolve(half, &e, &err) && strstr(err.msg, "DTL_WORLD_SIZE"));
    const char *half2[] = {"DTL_WORLD_SIZE=2", "RANK=0", "WORLD_SIZE=2", NULL};
    CHECK(!resolve(half2, &e, &err) && strstr(err.msg, "DTL_RANK"));
    const char *nocoord[] = {"DTL_RANK=0", "DTL_WORLD_SIZE=2", NULL};
    CHECK(!resolve(nocoord, &e, &err) && strstr(err.msg, "DTL_COORDINATOR"));
    const char *big[] = {"DTL_RANK=2", "DTL_WORLD_SIZE=2", "DTL_COORDINATOR=h:1", NULL};
    CHECK(!resolve(big, &e, &err) && strstr(err.msg, "DTL_RANK=2 is not below"));
    const char *neg[] = {"DTL_RANK=-1", "DTL_WORLD_SIZE=2", "DTL_COORDINATOR=h:1", NULL};
    CHECK(!resolve(neg, &e, &err) && strstr(err.msg, "DTL_RANK='-1'"));
    const char *junk[] = {"RANK=1x", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=1", NULL};
    CHECK(!resolve(junk, &e, &err) && strstr(err.msg, "RANK='1x'"));
    const char *zero[] = {"DTL_RANK=0", "DTL_WORLD_SIZE=0", NULL};
    CHECK(!resolve(zero, &e, &err) && strstr(err.msg, "DTL_WORLD_SIZE='0'"));
    const char *huge[] = {"DTL_RANK=0", "DTL_WORLD_SIZE=99999999999999999999", NULL};
    CHECK(!resolve(huge, &e, &err) && strstr(err.msg, "DTL_WORLD_SIZE"));
    const char *nomaster[] = {"RANK=1", "WORLD_SIZE=2", "MASTER_ADDR=h", NULL};
    CHECK(!resolve(nomaster, &e, &err) && strstr(err.msg, "MASTER_PORT"));
    const char *badport[] = {"RANK=1", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=70000", NULL};
    CHECK(!resolve(badport, &e, &err) && strstr(err.msg, "MASTER_PORT='70000'"));
    const char *badcoord[] = {"DTL_RANK=0", "DTL_WORLD_SIZE=2", "DTL_COORDINATOR=nohost", NULL};
    CHECK(!resolve(badcoord, &e, &err) && strstr(err.msg, "DTL_COORDINATOR='nohost'"));

    /* DTL_TIMEOUT, providers, interface. */
    const char *t[] = {"DTL_TIMEOUT=2.5", "DTL_FABRIC_PROVIDER=tcp;ofi_rxm", "FI_PROVIDER=shm",
                       "DTL_FABRIC_IFACE=eth1", NULL};
    CHECK(resolve(t, &e, &err) && fabs(e.timeout_s - 2.5) < 1e-12);
    CHECK_STR(e.provider, "tcp;ofi_rxm");
    CHECK(!e.provider_is_fi);
    CHECK_STR(e.iface, "eth1");
    CHECK_STR(e.job, "");
    const char *jobs[] = {"DTL_JOB_ID=j7", "SLURM_JOB_ID=5", "SLURM_STEP_ID=1", NULL};
    CHECK(resolve(jobs, &e, &err));
    CHECK_STR(e.job, "j7");
    CHECK(resolve(jobs + 1, &e, &err));
    CHECK_STR(e.job, "slurm:5.1");
    const char *tjob[] = {"TORCHELASTIC_RUN_ID=abc", "OMPI_MCA_ess_base_jobid=9", NULL};
    CHECK(resolve(tjob, &e, &err));
    CHECK_STR(e.job, "abc");
    CHECK(resolve(tjob + 1, &e, &err));
    CHECK_STR(e.job, "9");
    const char *fi[] = {"FI_PROVIDER=tcp", NULL};
    CHECK(resolve(fi, &e, &err) && e.provider_is_fi);
    CHECK_STR(e.provider, "tcp");
    const char *bad_t[] = {"DTL_TIMEOUT=0", NULL};
    CHECK(!resolve(bad_t, &e, &err) && strstr(err.msg, "DTL_TIMEOUT='0'"));
    const char *bad_t2[] = {"DTL_TIMEOUT=soon", NULL};
    CHECK(!resolve(bad_t2, &e, &err) && strstr(err.msg, "DTL_TIMEOUT"));
}

static void test_nodelist(void)
{
    char h[64];
    dtl_err err;
    struct {
        const char *list, *first;
    } ok[] = {
        {"node[01-04],other", "node01"},
        {"other,node[01-04]", "other"},
        {"n7", "n7"},
        {"gpu[7,9-10]", "gpu7"},
        {"rack[2-3]-node[001-016]", "rack2-node001"},
        {"a-b.c[10-12]x", "a-b.c10x"},
        {"login[5]", "login5"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        h[0] = 0;
        CHECK(dtl_comm_nodelist_first(ok[i].list, h, sizeof h, &err));
        CHECK_STR(h, ok[i].first);
    }
    const char *bad[] = {"", ",a", "n[", "n[]", "n[1-2", "n]1", "n[a-b]", "n[1-2;3]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(!dtl_comm_nodelist_first(bad[i], h, sizeof h, &err));
        CHECK(strstr(err.msg, "node list") != NULL);
    }
    char tiny[4];
    CHECK(!dtl_comm_nodelist_first("node[01-02]", tiny, sizeof tiny, &err));
    CHECK(strstr(err.msg, "too long") != NULL);
}

static void test_hostport(void)
{
    char h[64];
    int port = 0;
    dtl_err err;
    CHECK(dtl_comm_parse_hostport("localhost:29500", "X", h, sizeof h, &port, &err));
    CHECK_STR(h, "localhost");
    CHECK(port == 29500);
    CHECK(dtl_comm_parse_hostport("[fe80::1]:80", "X", h, sizeof h, &port, &err));
    CHECK_STR(h, "fe80::1");
    CHECK(port == 80);
    const char *bad[] = {"h", "h:", ":5", "h:0", "h:65536", "h:5x", "[::1]5", "[::1:5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(!dtl_comm_parse_hostport(bad[i], "DTL_COORDINATOR", h, sizeof h, &port, &err));
        CHECK(strstr(err.msg, "DTL_COORDINATOR=") != NULL);
    }
}

static void test_sig(void)
{
    char b[128];
    CHECK_STR(dtl_comm_sig(b, sizeof b, "allreduce", 1000, DTL_DTYPE_F32, DTL_COMM_MEAN,
                           "mnist.dtl:12"),
              "allreduce f32[1000] mean @ mnist.dtl:12");
    CHECK_STR(dtl_comm_sig(b, sizeof b, "broadcast", 7, DTL_DTYPE_F64, DTL_COMM_MAX, NULL),
              "broadcast f64[7]");
}

int main(void)
{
    test_sources();
    test_errors();
    test_nodelist();
    test_hostport();
    test_sig();
    CHECK_DONE();
}
