set terminal pngcairo size 1000,600 font ',10'
set output 'throughput_vs_workers.png'
set title 'd. Throughput vs worker processes'
set xlabel 'worker processes'
set ylabel 'requests/s'
set grid
set key outside right top
set datafile missing '?'
set logscale x
set logscale y
set xtics ('1' 1, '2' 2, '4' 4)
set xrange [0.6666666666666666:6.0]
$d0 << EOD
1 18496.2
2 20156.6
4 24385.2
EOD
$d1 << EOD
1 860.83
2 950.72
4 965.66
EOD
$d2 << EOD
1 1206.42
2 1448.58
4 1163.36
EOD
$d3 << EOD
1 95.88
2 206.67
4 217.41
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon echo', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon hash', \
     $d2 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer echo', \
     $d3 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer hash'
