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
2 0.085
3 0.101
4 0.298
EOD
$d1 << EOD
1 0.078
2 0.085
3 0.095
4 0.335
EOD
$d2 << EOD
1 0.078
2 0.09
3 0.111
4 0.193
EOD
$d3 << EOD
1 0.08
2 0.095
3 0.13
4 3.48
EOD
$d4 << EOD
1 0.09
2 0.112
3 0.129
4 1.13
EOD
$d5 << EOD
1 0.134
2 6.15
3 73.22
4 203.72
EOD
$d6 << EOD
1 1.01
2 1.06
3 1.23
4 2.02
EOD
$d7 << EOD
1 1.17
2 1.65
3 1.99
4 8.86
EOD
$d8 << EOD
1 1.1
2 1.32
3 1.49
4 3.55
EOD
$d9 << EOD
1 1.5
2 4.76
3 20.24
4 92.86
EOD
$d10 << EOD
1 1.1
2 1.38
3 1.92
4 5.06
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
