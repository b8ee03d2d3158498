set terminal pngcairo size 1000,600 font ',10'
set output 'latency_a_echo.png'
set title 'a. POST /jobs/echo and GET /now latency'
set xlabel 'percentile'
set ylabel 'latency (ms)'
set grid
set key outside right top
set datafile missing '?'
set logscale y
set xtics ('p50' 1, 'p75' 2, 'p90' 3, 'p99' 4)
set xrange [0.7:4.3]
$d0 << EOD
1 1.23
2 1.49
3 1.8
4 3.27
EOD
$d1 << EOD
1 2.92
2 3.46
3 4.07
4 5.73
EOD
$d2 << EOD
1 12.92
2 15.31
3 18.1
4 23.34
EOD
$d3 << EOD
1 0.673
2 0.86
3 0.98
4 1.2
EOD
$d4 << EOD
1 9.94
2 12.15
3 14.46
4 19.37
EOD
$d5 << EOD
1 39.91
2 46.43
3 53.17
4 64.08
EOD
$d6 << EOD
1 139.69
2 167.29
3 200.44
4 246.96
EOD
$d7 << EOD
1 7.26
2 7.71
3 9.17
4 18.4
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon echo c16', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon echo c64', \
     $d2 using 1:2 with linespoints lw 2 lc 3 dt 1 pt 7 title 'Monsoon echo c256', \
     $d3 using 1:2 with linespoints lw 2 lc 4 dt 1 pt 7 title 'Monsoon /now c64', \
     $d4 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer echo c16', \
     $d5 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer echo c64', \
     $d6 using 1:2 with linespoints lw 2 lc 3 dt 2 pt 6 title 'peer echo c256', \
     $d7 using 1:2 with linespoints lw 2 lc 4 dt 2 pt 6 title 'peer /now c64'
