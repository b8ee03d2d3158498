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
1 12730.4
2 14895.5
4 14722.5
EOD
$d1 << EOD
1 691.56
2 867.22
4 893.46
EOD
$d2 << EOD
1 1269.51
2 1421.26
4 1276.51
EOD
$d3 << EOD
1 107.69
2 171.28
4 182.74
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon echo', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon hash', \
     $d2 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer echo', \
     $d3 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer hash'
