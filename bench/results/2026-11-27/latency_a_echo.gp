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
1 0.8
2 0.96
3 1.14
4 1.67
EOD
$d1 << EOD
1 2.13
2 2.53
3 2.95
4 4.4
EOD
$d2 << EOD
1 8.07
2 9.67
3 11.69
4 16.02
EOD
$d3 << EOD
1 0.681
2 0.755
3 0.97
4 1.25
EOD
$d4 << EOD
1 8.1
2 9.69
3 11.32
4 14.89
EOD
$d5 << EOD
1 36.53
2 42.69
3 47.54
4 61.78
EOD
$d6 << EOD
1 137.29
2 152.81
3 165.51
4 182.04
EOD
$d7 << EOD
1 7.01
2 7.34
3 7.61
4 12.93
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon echo c16', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon echo c64', \
     $d2 using 1:2 with linespoints lw 2 lc 3 dt 1 pt 7 title 'Monsoon echo c256', \
     $d3 using 1:2 with linespoints lw 2 lc 4 dt 1 pt 7 title 'Monsoon /now c64', \
     $d4 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer echo c16', \
     $d5 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer echo c64', \
     $d6 using 1:2 with linespoints lw 2 lc 3 dt 2 pt 6 title 'peer echo c256', \
     $d7 using 1:2 with linespoints lw 2 lc 4 dt 2 pt 6 title 'peer /now c64'
