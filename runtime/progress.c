/* runtime/progress.c — the progress bar and plain progress lines.
 *
 * Both modes print the same facts: epoch, step of steps, the running loss, samples per
 * second and the time left. The bar adds a 20-cell gauge; it is drawn at the start of the
 * line with "\r" and ends with "\033[K" (erase to the end of the line) so that a shorter
 * redraw leaves no tail. Rate limits keep a fast run from spending its time on the terminal
 * (bar: 0.1 s) and a long one from filling a log (plain: `every` seconds).
 */
#include "progress.h"

#include <math.h>
#include <string.h>
#include <time.h>

double dtl_progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void dtl_progress_init(dtl_progress *p, FILE *out, dtl_progress_mode mode, double every)
{
    p->out = out;
    p->mode = out ? mode : DTL_PROGRESS_MODE_NONE;
    p->every = every > 0 ? every : 10.0;
    p->last = -1.0;
    p->dirty = false;
}

void dtl_progress_fmt_time(double s, char *buf, size_t len)
{
    if (!(s >= 0) || !isfinite(s) || s > 1e9) {
        snprintf(buf, len, "?");
        return;
    }
    unsigned long t = (unsigned long)s;
    if (t >= 3600)
        snprintf(buf, len, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%lu:%02lu", t / 60, t % 60);
}

/* "loss 0.4123  5123 samples/s  ETA 1:23" */
static void tail(const dtl_progress_info *in, char *buf, size_t len)
{
    char eta[32], loss[32], rate[48];
    dtl_progress_fmt_time(in->eta_s, eta, sizeof eta);
    if (isnan(in->loss))
        snprintf(loss, sizeof loss, "-");
    else
        snprintf(loss, sizeof loss, "%.4f", in->loss);
    if (in->samples_per_s < 0)
        snprintf(rate, sizeof rate, "- samples/s");
    else
        snprintf(rate, sizeof rate, "%.0f samples/s", in->samples_per_s);
    snprintf(buf, len, "loss %s  %s  ETA %s", loss, rate, eta);
}

void dtl_progress_update(dtl_progress *p, const dtl_progress_info *in, double now, bool force)
{
    if (p->mode == DTL_PROGRESS_MODE_NONE)
        return;
    double gap = p->mode == DTL_PROGRESS_MODE_BAR ? 0.1 : p->every;
    if (!force && p->last >= 0 && now - p->last < gap)
        return;
    /* Plain mode's first line waits one interval too: short runs print none. */
    if (!force && p->last < 0 && p->mode == DTL_PROGRESS_MODE_PLAIN) {
        p->last = now;
        return;
    }
    p->last = now;
    char t[160];
    tail(in, t, sizeof t);
    if (p->mode == DTL_PROGRESS_MODE_PLAIN) {
        fprintf(p->out, "epoch %lld/%lld  step %lld/%lld  %s\n", (long long)in->epoch,
                (long long)in->epochs, (long long)in->step, (long long)in->steps, t);
        fflush(p->out);
        return;
    }
    enum { CELLS = 20 };
    char gauge[CELLS + 1];
    int full = in->steps > 0 ? (int)(in->step * CELLS / in->steps) : 0;
    if (full > CELLS)
        full = CELLS;
    memset(gauge, '#', (size_t)full);
    memset(gauge + full, '.', (size_t)(CELLS - full));
    gauge[CELLS] = '\0';
    fprintf(p->out, "\repoch %lld/%lld [%s] %lld/%lld  %s\033[K", (long long)in->epoch,
            (long long)in->epochs, gauge, (long long)in->step, (long long)in->steps, t);
    fflush(p->out);
    p->dirty = true;
}

void dtl_progress_clear(dtl_progress *p)
{
    if (p->mode != DTL_PROGRESS_MODE_BAR || !p->dirty)
        return;
    fputs("\r\033[K", p->out);
    fflush(p->out);
    p->dirty = false;
}

void dtl_progress_fmt_bytes(double bytes, char *buf, size_t len)
{
    if (bytes < 1000)
        snprintf(buf, len, "%.0f B", bytes);
    else if (bytes < 1e6)
        snprintf(buf, len, "%.1f kB", bytes / 1e3);
    else if (bytes < 1e9)
        snprintf(buf, len, "%.1f MB", bytes / 1e6);
    else
        snprintf(buf, len, "%.2f GB", bytes / 1e9);
}
