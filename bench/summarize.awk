# Summarises bench/run's results.tsv (tab-separated; see the header line).
#   awk -F'\t' -v quiet_max=10 -f bench/summarize.awk results.tsv   full summary
#   ... -v mode=row                                                one formatted row per line
# Columns: 1 layout, 2 attempt, 3 target, 4 requests, 5 duration_us, 6 p50_us, 7 p99_us,
# 8 proxy_ticks, 9 backend_ticks, 10 wrk_ticks, 11 hz, 12 other_pct, 13 steal_pct,
# 14 errors, 15 prequiet_pct, 16 status, 17 wall_us, 18 proxy_user_ticks, 19 proxy_sys_ticks.

function rps(r) { return r[5] > 0 ? r[4] / (r[5] / 1e6) : 0 }
function per_req(ticks, r) { return r[4] > 0 ? ticks * 1e6 / r[11] / r[4] : 0 }

function row_line(layout_name, n, r,    proxy) {
    proxy = (r[3] == "direct") ? "-" : sprintf("%.2f", per_req(r[8], r))
    return sprintf("%-3s %-7s %9.0f %7d %7d %10s %10.2f %10.2f %6.1f %6.1f  %s",
        r[2], r[3], rps(r), r[6], r[7], proxy, per_req(r[9], r), per_req(r[10], r),
        r[12], r[15], r[16])
}

function header() {
    return sprintf("%-3s %-7s %9s %7s %7s %10s %10s %10s %6s %6s  %s",
        "rep", "target", "req/s", "p50 us", "p99 us", "proxy", "backend", "wrk",
        "other%", "pre%", "status") "\n" \
        sprintf("%-3s %-7s %9s %7s %7s %10s %10s %10s %6s %6s",
        "", "", "", "", "", "cpu-us/req", "cpu-us/req", "cpu-us/req", "during", "before")
}

function median(a, n,    b, i, j, t) {
    if (n == 0) return 0
    for (i = 1; i <= n; i++) b[i] = a[i]
    for (i = 2; i <= n; i++) {
        t = b[i]
        for (j = i - 1; j >= 1 && b[j] > t; j--) b[j + 1] = b[j]
        b[j + 1] = t
    }
    return (n % 2) ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
}
function minimum(a, n,    i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] < m) m = a[i]; return m }
function maximum(a, n,    i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] > m) m = a[i]; return m }
function spread(a, n, fmt) {
    if (n == 0) return "n/a"
    return sprintf(fmt " [" fmt " - " fmt "]", median(a, n), minimum(a, n), maximum(a, n))
}

mode == "row" {
    split($0, r, "\t")
    print row_line(r[1], 0, r)
    next
}

/^#/ { next }

{
    n = ++rows
    for (i = 1; i <= NF; i++) cell[n, i] = $i
    if (!($1 in seen_layout)) { seen_layout[$1] = 1; layouts[++nlayouts] = $1 }
    key = $1 SUBSEP $2
    if (!(key in seen_rep)) { seen_rep[key] = 1; reps[$1, ++nreps[$1]] = $2; rep_clean[key] = 1 }
    if ($16 != "ok" || $15 + 0 > quiet_max + 0) rep_clean[key] = 0
    if ($16 == "failed" || $16 == "errors") rep_failed[key] = 1
    at[key, $3] = n
    if (!($3 in seen_target)) seen_target[$3] = 1
}

# Prints the ratios A/B per counted repetition of `layout`: median [min - max]; with
# `verdict`, whether they meet the issue's targets (req/s >= 1, p99 <= 1.2).
function ratios(layout, A, B, verdict,    u, a, m, ra, rb, q_rps, q_p50, q_p99, q_cpu, r1, r2) {
    m = 0
    for (u = 1; u <= used; u++) {
        a = use[u]
        if (!((layout SUBSEP a SUBSEP A) in at) || !((layout SUBSEP a SUBSEP B) in at)) continue
        get(at[layout, a, B], rb)
        get(at[layout, a, A], ra)
        if (rps(rb) == 0 || rb[6] == 0 || rb[7] == 0 || per_req(rb[8], rb) == 0) continue
        m++
        q_rps[m] = rps(ra) / rps(rb)
        q_p50[m] = ra[6] / rb[6]
        q_p99[m] = ra[7] / rb[7]
        q_cpu[m] = per_req(ra[8], ra) / per_req(rb[8], rb)
    }
    print ""
    printf "%s/%s, median [min - max] over %d repetition(s):\n", A, B, m
    printf "  req/s                 %s\n", spread(q_rps, m, "%.3f")
    printf "  p50 latency           %s\n", spread(q_p50, m, "%.3f")
    printf "  p99 latency           %s\n", spread(q_p99, m, "%.3f")
    printf "  proxy CPU-us/request  %s\n", spread(q_cpu, m, "%.3f")
    if (verdict && m > 0) {
        r1 = median(q_rps, m); r2 = median(q_p99, m)
        printf "targets (%s): req/s >= nginx: %s (%.3f); p99 <= 1.2 x nginx: %s (%.3f)%s\n", A,
            (r1 >= 1.0) ? "MET" : "NOT MET", r1, (r2 <= 1.2) ? "MET" : "NOT MET", r2,
            (caveat != "") ? " [contended]" : ""
    }
}

function get(n, r,    i) { for (i = 1; i <= 19; i++) r[i] = cell[n, i] }

END {
    if (mode == "row") exit
    ntargets = 0
    split("direct nginx floor raw weir cand", known, " ")
    for (t = 1; t <= 6; t++) if (known[t] in seen_target) targets[++ntargets] = known[t]
    for (L = 1; L <= nlayouts; L++) {
        layout = layouts[L]
        if (layout == "pinned")
            print "== pinned: wrk on CPU 0; backend, nginx and weir on CPU 1 =="
        else
            print "== unpinned: every process free to run on any CPU =="
        print header()
        for (k = 1; k <= nreps[layout]; k++) {
            a = reps[layout, k]
            for (t = 1; t <= ntargets; t++) {
                tg = targets[t]
                if ((layout SUBSEP a SUBSEP tg) in at) {
                    get(at[layout, a, tg], r)
                    print row_line(layout, 0, r)
                }
            }
        }
        # Which repetitions count: the clean ones; if none, every complete one, flagged.
        used = 0; caveat = ""
        for (k = 1; k <= nreps[layout]; k++) {
            a = reps[layout, k]
            if (rep_clean[layout, a]) use[++used] = a
        }
        if (used == 0) {
            for (k = 1; k <= nreps[layout]; k++) {
                a = reps[layout, k]
                if (!rep_failed[layout, a] && ((layout SUBSEP a SUBSEP "nginx") in at) && ((layout SUBSEP a SUBSEP "weir") in at))
                    use[++used] = a
            }
            caveat = "  CAVEAT: no repetition was quiet (other processes above " quiet_max "% of the machine); these figures are contended and unreliable"
        }
        print ""
        printf "medians over %d repetition(s) used of %d tried:\n", used, nreps[layout]
        if (caveat != "") print caveat
        printf "%-8s %9s %7s %7s %10s %10s %10s %10s\n", "target", "req/s", "p50 us", "p99 us", "proxy", "backend", "proxy", "proxy"
        printf "%-8s %9s %7s %7s %10s %10s %10s %10s\n", "", "", "", "", "cpu-us/req", "cpu-us/req", "user", "system"
        for (t = 1; t <= ntargets; t++) {
            tg = targets[t]
            m = 0
            for (u = 1; u <= used; u++) {
                if (!((layout SUBSEP use[u] SUBSEP tg) in at)) continue
                get(at[layout, use[u], tg], r)
                m++
                v_rps[m] = rps(r); v_p50[m] = r[6]; v_p99[m] = r[7]
                v_px[m] = per_req(r[8], r); v_be[m] = per_req(r[9], r)
                v_pu[m] = per_req(r[18], r); v_ps[m] = per_req(r[19], r)
            }
            if (m == 0) continue
            med_rps[tg] = median(v_rps, m)
            printf "%-8s %9.0f %7.0f %7.0f %10s %10.2f %10s %10s\n", tg, med_rps[tg], median(v_p50, m),
                median(v_p99, m), (tg == "direct") ? "-" : sprintf("%.2f", median(v_px, m)),
                median(v_be, m),
                (tg == "direct" || r[18] == "") ? "-" : sprintf("%.2f", median(v_pu, m)),
                (tg == "direct" || r[19] == "") ? "-" : sprintf("%.2f", median(v_ps, m))
        }
        # Ratios per repetition, then their median and spread.
        ratios(layout, "weir", "nginx", 1)
        if ("floor" in seen_target) {
            ratios(layout, "floor", "nginx", 0)
            ratios(layout, "weir", "floor", 0)
        }
        if ("raw" in seen_target) {
            ratios(layout, "raw", "nginx", 0)
            ratios(layout, "raw", "floor", 0)
        }
        if ("cand" in seen_target) {
            ratios(layout, "cand", "nginx", 1)
            ratios(layout, "cand", "weir", 0)
        }
        print ""
        delete use
    }
}
