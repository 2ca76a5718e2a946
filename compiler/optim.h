/* compiler/optim.h — optimizer updates as graph nodes.
 *
 * Contract: dtl_opt_build appends the nodes (role DTL_ROLE_UPDATE) of one optimizer step for
 * params[i] with gradients grads[i], and for every leaf it updates a graph output: a
 * DTL_OUT_PARAM named like the param, and a DTL_OUT_STATE for each moment, a STATE node of
 * the param's dtype and shape named "<param>.m" (Adam's first moment, SGD's momentum buffer)
 * or "<param>.v" (Adam's second moment); those names are what checkpoints store. The update
 * number t reads the graph's INPUT "step" (dtl_nn_step: reused when present, else an i64
 * scalar), 1 for the first update; the learning rate's schedule and Adam's bias corrections
 * are computed in f64 from it, in the graph. The formulas are PyTorch 1.13's (torch.optim.SGD,
 * Adam, AdamW; lr_scheduler StepLR and CosineAnnealingLR; nn.utils.clip_grad_norm_), so a
 * PyTorch run from the same values agrees to rounding:
 *
 *   clip (clip_norm > 0): norm = sqrt(sum over all grads of sum(g^2));
 *                         g *= min(1, clip_norm / (norm + 1e-6))
 *   SGD:   g += wd p;  momentum != 0: m = momentum m + (1 - dampening) g (m = g at t = 1);
 *          d = nesterov ? g + momentum m : m  (d = g without momentum);  p -= lr d
 *   Adam:  g += wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *          denom = sqrt(v) / sqrt(1 - b2^t) + eps;  p -= (lr / (1 - b1^t)) m / denom
 *          (= lr m^ / (sqrt(v^) + eps) with m^ = m / (1 - b1^t), v^ = v / (1 - b2^t),
 *          arranged as PyTorch computes it)
 *   AdamW: p *= 1 - lr wd;  then Adam without the "g += wd p"
 *
 * Learning-rate schedules, with e = t - 1 (updates done before this one):
 *   constant  lr
 *   step      lr gamma^floor(e / step_size)                          (StepLR)
 *   cosine    floor + (lr - floor) (1 + cos(pi min(e, total) / total)) / 2
 *                                                (CosineAnnealingLR, held at floor after total)
 *   warmup W > 0 (with any of them): lr t / W for t <= W, then the schedule with e - W
 *
 * A cosine schedule with total_from_run takes its length from the run, at run time: the graph
 * gets an i64 scalar INPUT "total_steps" (reused when present), the number of updates of the
 * whole run, and anneals over max(total_steps - W, 1) updates: the rest of the run after warmup
 * (PyTorch's T_max). The graph then does not depend on the data's size (a runner binds the
 * input once it knows it); dtl_sched_run_total gives the same number in C.
 *
 * Errors: a configuration out of range (negative lr, betas outside [0, 1), nesterov without
 * momentum or with dampening, a schedule with step_size or total < 1 …), a params[i] that
 * is not a float PARAM, a gradient of another dtype or shape, a param listed twice or already
 * updated by an output, "<param>.m" already present, an input "step" (or "total_steps") that
 * is not a scalar:
 * returns false with err filled (DTL_ERR_USAGE) before changing the graph.
 */
#ifndef DTL_OPTIM_H
#define DTL_OPTIM_H

#include <stdbool.h>

#include "../runtime/err.h"
#include "graph.h"

typedef enum dtl_opt_kind { DTL_OPT_SGD, DTL_OPT_ADAM, DTL_OPT_ADAMW } dtl_opt_kind;

typedef enum dtl_sched_kind {
    DTL_SCHED_CONSTANT, DTL_SCHED_STEP, DTL_SCHED_COSINE
} dtl_sched_kind;

typedef struct dtl_sched {
    dtl_sched_kind kind;
    int64_t step_size;     /* STEP: multiply by gamma every step_size updates */
    double gamma;          /* STEP */
    int64_t total;         /* COSINE: updates from lr down to floor */
    bool total_from_run;   /* COSINE: total is the run's, from the input "total_steps" (above) */
    double floor;          /* COSINE: the final lr (eta_min) */
    int64_t warmup;        /* > 0: linear warmup over the first `warmup` updates */
} dtl_sched;

typedef struct dtl_opt_cfg {
    dtl_opt_kind kind;
    double lr;
    double beta1, beta2, eps;     /* ADAM, ADAMW */
    double momentum, dampening;   /* SGD */
    bool nesterov;                /* SGD */
    double weight_decay;          /* SGD, ADAM: L2 (added to the gradient); ADAMW: decoupled */
    dtl_sched sched;
    double clip_norm;             /* > 0: clip by global norm first; 0: off */
} dtl_opt_cfg;

/* PyTorch's defaults for kind: lr 1e-3 (SGD: 0.01, torch has none), betas (0.9, 0.999),
 * eps 1e-8, weight decay 0 (AdamW 0.01), no momentum, constant schedule, no clipping. */
void dtl_opt_defaults(dtl_opt_cfg *cfg, dtl_opt_kind kind);

/* What the caller may want to log: the learning rate of this update (f64 scalar) and, when
 * clipping, the global gradient norm before clipping (f64 scalar; else DTL_VAL_NONE). */
typedef struct dtl_opt_info {
    dtl_val lr, grad_norm;
} dtl_opt_info;

bool dtl_opt_build(dtl_graph *g, const dtl_opt_cfg *cfg, const dtl_val *params,
                   const dtl_val *grads, uint32_t n, dtl_opt_info *info, dtl_err *err);

/* The learning rate of update t (1-based) as the graph computes it, in plain C: for tests,
 * logs and tools. It reads sched.total, never total_from_run: for a cosine over the run, pass
 * a copy whose sched.total is dtl_sched_run_total(&cfg->sched, run_updates). */
double dtl_opt_lr_at(const dtl_opt_cfg *cfg, int64_t t);

/* The length of a cosine schedule with total_from_run in a run of run_updates updates:
 * max(run_updates - warmup, 1) — what the graph computes from its input "total_steps". */
int64_t dtl_sched_run_total(const dtl_sched *s, int64_t run_updates);

#endif
