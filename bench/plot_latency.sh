#!/usr/bin/env bash
# Plots the percentile distribution that `ringfeed-bench latency --csv FILE` writes: one
# line per system, latency (log scale) against the percentile on a log-scale "nines"
# axis (x = 1 / (1 - quantile): 90 % at 10, 99 % at 100, ...), so the tail gets as much
# room as the median. Needs gnuplot (Debian package gnuplot-nox).
#
#   bash bench/plot_latency.sh latency.csv latency.png ["title"]
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 CSV PNG [TITLE]" >&2
  exit 2
fi
csv=$1
png=$2
title=${3:-one-way latency, percentile distribution}
[ -r "$csv" ] || { echo "plot_latency: cannot read $csv" >&2; exit 1; }
head -n 1 "$csv" | grep -q '^quantile,nines,' ||
  { echo "plot_latency: $csv is not a ringfeed-bench latency CSV (no 'quantile,nines,' header)" >&2; exit 1; }
command -v gnuplot >/dev/null ||
  { echo "plot_latency: gnuplot not found: install the Debian package gnuplot-nox" >&2; exit 1; }

# Strings reach gnuplot as variables (-e), not pasted into its script.
gnuplot -e "csv='${csv//\'/\'\'}'; png='${png//\'/\'\'}'; plot_title='${title//\'/\'\'}'" /dev/stdin <<'GNUPLOT'
set terminal pngcairo size 1200,750 font ",11"
set output png
set datafile separator ','
set title plot_title noenhanced
set key top left noenhanced
set logscale x 10
set logscale y 10
set grid xtics ytics mytics
set xlabel 'percentile'
set ylabel 'latency (microseconds)'
set xtics ('0%%' 1, '90%%' 10, '99%%' 100, '99.9%%' 1e3, '99.99%%' 1e4, '99.999%%' 1e5, '99.9999%%' 1e6, '99.99999%%' 1e7)
set format y '%g'
# A latency of 0 (reader's clock a few ns behind the writer's) has no place on a log axis.
plot for [i=3:*] csv using 2:(column(i) > 0 ? column(i) / 1000.0 : NaN) with lines lw 2 title columnhead(i)
GNUPLOT
echo "plot_latency: wrote $png"
