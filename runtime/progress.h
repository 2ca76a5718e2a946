/* runtime/progress.h — training progress on a terminal or in a log.
 *
 * Contract: a dtl_progress writes to one FILE (stderr). In bar mode (a terminal) it redraws
 * one line in place ("\r…\033[K"), at most ten times a second; dtl_progress_clear wipes that
 * line so that other output can follow on a clean line. In plain mode (a pipe, a log file)
 * it writes a whole line at most once every `every` seconds, so a long run does not flood
 * the log. In none mode it writes nothing. Time is passed in by the caller (seconds from
 * dtl_progress_now or any other origin), so the output is a pure function of the calls.
 * Nothing here allocates or fails; write errors are the FILE's (the caller checks ferror).
 */
#ifndef DTL_PROGRESS_H
#define DTL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum dtl_progress_mode {
    DTL_PROGRESS_MODE_NONE, DTL_PROGRESS_MODE_BAR, DTL_PROGRESS_MODE_PLAIN
} dtl_progress_mode;

typedef struct dtl_progress {
    FILE *out;
    dtl_progress_mode mode;
    double every;         /* plain: seconds between lines */
    double last;          /* when the last line or bar was drawn; < 0: never */
    bool dirty;           /* bar: a bar is on the line now */
} dtl_progress;

typedef struct dtl_progress_info {
    int64_t epoch, epochs;      /* 1-based */
    int64_t step, steps;        /* steps done in this epoch, of steps */
    double loss;                /* the epoch's running mean; NaN: none yet */
    double samples_per_s;       /* < 0: not known yet */
    double eta_s;               /* seconds left in this run; < 0: not known */
} dtl_progress_info;

/* Monotonic seconds since an arbitrary origin. */
double dtl_progress_now(void);

void dtl_progress_init(dtl_progress *p, FILE *out, dtl_progress_mode mode, double every);

/* Shows where training is, if it is time to (force: now, whatever the rate limit). */
void dtl_progress_update(dtl_progress *p, const dtl_progress_info *in, double now, bool force);

/* Bar mode: erases the bar (if drawn). Other modes: nothing. */
void dtl_progress_clear(dtl_progress *p);

/* "1:02:03" / "2:03" for seconds s (rounded down); "?" when s < 0 or not finite. */
void dtl_progress_fmt_time(double s, char *buf, size_t len);

/* "512 B", "802.8 kB", "4.2 MB", "1.07 GB" (powers of 1000) for a byte count. */
void dtl_progress_fmt_bytes(double bytes, char *buf, size_t len);

#endif
