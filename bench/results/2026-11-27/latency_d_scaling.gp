set terminal pngcairo size 1000,600 font ',10'
set output 'latency_d_scaling.png'
set title 'd. echo and hash latency by worker processes'
set xlabel 'percentile'
set ylabel 'latency (ms)'
set grid
set key outside right top
set datafile missing '?'
set logscale y
set xtics ('p50' 1, 'p75' 2, 'p90' 3, 'p99' 4)
set xrange [0.7:4.3]
$d0 << EOD
1 3.36
2 3.85
3 4.44
4 6.84
EOD
$d1 << EOD
1 72.43
2 77.49
3 83.18
4 96.03
EOD
$d2 << EOD
1 2.99
2 3.45
3 4.08
4 6.85
EOD
$d3 << EOD
1 65.23
2 71.18
3 78.86
4 110.83
EOD
$d4 << EOD
1 2.48
2 2.91
3 3.45
4 4.94
EOD
$d5 << EOD
1 60.57
2 76.1
3 98.85
4 180.46
EOD
$d6 << EOD
1 53.84
2 62.51
3 70.97
4 84
EOD
$d7 << EOD
1 599.64
2 669.74
3 701.93
4 1120
EOD
$d8 << EOD
1 44.33
2 50.05
3 56.16
4 66.91
EOD
$d9 << EOD
1 288.84
2 324.97
3 360.5
4 494.46
EOD
$d10 << EOD
1 52.7
2 61.12
3 74.01
4 92.73
EOD
$d11 << EOD
1 279.27
2 297.72
3 317.85
4 485.66
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon echo 1w', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon hash 1w', \
     $d2 using 1:2 with linespoints lw 2 lc 3 dt 1 pt 7 title 'Monsoon echo 2w', \
     $d3 using 1:2 with linespoints lw 2 lc 4 dt 1 pt 7 title 'Monsoon hash 2w', \
     $d4 using 1:2 with linespoints lw 2 lc 5 dt 1 pt 7 title 'Monsoon echo 4w', \
     $d5 using 1:2 with linespoints lw 2 lc 6 dt 1 pt 7 title 'Monsoon hash 4w', \
     $d6 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer echo 1w', \
     $d7 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer hash 1w', \
     $d8 using 1:2 with linespoints lw 2 lc 3 dt 2 pt 6 title 'peer echo 2w', \
     $d9 using 1:2 with linespoints lw 2 lc 4 dt 2 pt 6 title 'peer hash 2w', \
     $d10 using 1:2 with linespoints lw 2 lc 5 dt 2 pt 6 title 'peer echo 4w', \
     $d11 using 1:2 with linespoints lw 2 lc 6 dt 2 pt 6 title 'peer hash 4w'
