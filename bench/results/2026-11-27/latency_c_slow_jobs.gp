set terminal pngcairo size 1000,600 font ',10'
set output 'latency_c_slow_jobs.png'
set title 'c. POST /jobs/sleep 100 ms latency'
set xlabel 'percentile'
set ylabel 'latency (ms)'
set grid
set key outside right top
set datafile missing '?'
set logscale y
set xtics ('p50' 1, 'p75' 2, 'p90' 3, 'p99' 4)
set xrange [0.7:4.3]
$d0 << EOD
1 101.45
2 102.24
3 104.11
4 110.3
EOD
$d1 << EOD
1 170.98
2 187.66
3 199.08
4 212.84
EOD
$d2 << EOD
1 139.02
2 155.64
3 173.37
4 247.99
EOD
$d3 << EOD
1 1340
2 1440
3 1640
4 1920
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon sleep100 c200', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon sleep100 c2000', \
     $d2 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer sleep100 c200', \
     $d3 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer sleep100 c2000'
