set terminal pngcairo size 1000,600 font ',10'
set output 'now_p99_vs_k.png'
set title 'b. GET /now p99 vs K slow jobs in flight'
set xlabel 'K (slow jobs in flight)'
set ylabel 'p99 latency (ms)'
set grid
set key outside right top
set datafile missing '?'
set logscale x
set logscale y
set xtics ('100' 100, '1000' 1000, '10000' 10000)
set xrange [66.66666666666667:15000.0]
$d0 << EOD
100 0.298
1000 0.193
10000 1.13
EOD
$d1 << EOD
100 0.335
1000 3.48
10000 203.72
EOD
$d2 << EOD
100 2.02
1000 3.55
10000 5.06
EOD
$d3 << EOD
100 8.86
1000 92.86
10000 ?
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon held', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon churn', \
     $d2 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer held', \
     $d3 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer churn'
