set terminal pngcairo size 1000,600 font ',10'
set output 'latency_b_now_under_load.png'
set title 'b. GET /now latency while K slow jobs are in flight'
set xlabel 'percentile'
set ylabel 'latency (ms)'
set grid
set key outside right top
set datafile missing '?'
set logscale y
set xtics ('p50' 1, 'p75' 2, 'p90' 3, 'p99' 4)
set xrange [0.7:4.3]
$d0 << EOD
1 0.078
2 0.087
3 0.102
4 0.251
EOD
$d1 << EOD
1 0.094
2 0.104
3 0.125
4 0.314
EOD
$d2 << EOD
1 0.086
2 0.093
3 0.104
4 0.379
EOD
$d3 << EOD
1 0.078
2 0.088
3 0.111
4 1.61
EOD
$d4 << EOD
1 0.078
2 0.085
3 0.092
4 0.19
EOD
$d5 << EOD
1 0.101
2 0.192
3 0.86
4 4.08
EOD
$d6 << EOD
1 1.08
2 1.14
3 1.21
4 4.05
EOD
$d7 << EOD
1 1.03
2 1.11
3 1.22
4 7.15
EOD
$d8 << EOD
1 1.01
2 1.05
3 1.11
4 1.52
EOD
$d9 << EOD
1 1.27
2 3.41
3 20.71
4 137.75
EOD
$d10 << EOD
1 1.13
2 1.37
3 1.65
4 3.7
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon K=100 held', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon K=100 churn', \
     $d2 using 1:2 with linespoints lw 2 lc 3 dt 1 pt 7 title 'Monsoon K=1000 held', \
     $d3 using 1:2 with linespoints lw 2 lc 4 dt 1 pt 7 title 'Monsoon K=1000 churn', \
     $d4 using 1:2 with linespoints lw 2 lc 5 dt 1 pt 7 title 'Monsoon K=10000 held', \
     $d5 using 1:2 with linespoints lw 2 lc 6 dt 1 pt 7 title 'Monsoon K=10000 churn', \
     $d6 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer K=100 held', \
     $d7 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer K=100 churn', \
     $d8 using 1:2 with linespoints lw 2 lc 3 dt 2 pt 6 title 'peer K=1000 held', \
     $d9 using 1:2 with linespoints lw 2 lc 4 dt 2 pt 6 title 'peer K=1000 churn', \
     $d10 using 1:2 with linespoints lw 2 lc 5 dt 2 pt 6 title 'peer K=10000 held'
