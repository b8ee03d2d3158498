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
1 102.33
2 103.36
3 104.54
4 107.61
EOD
$d1 << EOD
1 105.53
2 108.21
3 112.36
4 129.16
EOD
$d2 << EOD
1 136.12
2 151.12
3 168.82
4 255.87
EOD
$d3 << EOD
1 1180
2 1270
3 1380
4 1970
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon sleep100 c200', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon sleep100 c2000', \
     $d2 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer sleep100 c200', \
     $d3 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer sleep100 c2000'
