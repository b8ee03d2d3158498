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
1 4.79
2 6.08
3 7.09
4 10.89
EOD
$d1 << EOD
1 92.84
2 102.38
3 106.62
4 135.36
EOD
$d2 << EOD
1 4.05
2 4.85
3 5.81
4 8.41
EOD
$d3 << EOD
1 69.09
2 79.54
3 96.62
4 125.8
EOD
$d4 << EOD
1 4.06
2 4.88
3 5.73
4 8.92
EOD
$d5 << EOD
1 66.63
2 82.22
3 99.66
4 152.39
EOD
$d6 << EOD
1 48.44
2 57.18
3 67.12
4 80.16
EOD
$d7 << EOD
1 537.72
2 565.86
3 650.72
4 1020
EOD
$d8 << EOD
1 44.37
2 50.95
3 57.84
4 63.14
EOD
$d9 << EOD
1 354.82
2 391.25
3 417.63
4 514.76
EOD
$d10 << EOD
1 49.8
2 56.67
3 62.15
4 71.49
EOD
$d11 << EOD
1 327.53
2 375.43
3 403.26
4 498.58
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
