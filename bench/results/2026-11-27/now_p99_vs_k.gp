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
100 0.251
1000 0.379
10000 0.19
EOD
$d1 << EOD
100 0.314
1000 1.61
10000 4.08
EOD
$d2 << EOD
100 4.05
1000 1.52
10000 3.7
EOD
$d3 << EOD
100 7.15
1000 137.75
10000 ?
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon held', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon churn', \
     $d2 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer held', \
     $d3 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer churn'
