set terminal pngcairo size 1000,600 font ',10'
set output 'throughput_vs_connections.png'
set title 'Throughput vs connections (a and c)'
set xlabel 'connections'
set ylabel 'requests/s'
set grid
set key outside right top
set datafile missing '?'
set logscale x
set logscale y
set xtics ('16' 16, '64' 64, '200' 200, '256' 256, '2000' 2000)
set xrange [10.666666666666666:3000.0]
$d0 << EOD
16 18584.7
64 28362.1
256 29046.2
EOD
$d1 << EOD
64 85778.5
EOD
$d2 << EOD
16 1861.28
64 1722.5
256 1876.55
EOD
$d3 << EOD
64 8877.76
EOD
$d4 << EOD
200 1928
2000 18144.9
EOD
$d5 << EOD
200 1385.48
2000 1478.43
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon POST /jobs/echo', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon GET /now baseline', \
     $d2 using 1:2 with linespoints lw 2 lc 1 dt 2 pt 6 title 'peer POST /jobs/echo', \
     $d3 using 1:2 with linespoints lw 2 lc 2 dt 2 pt 6 title 'peer GET /now baseline', \
     $d4 using 1:2 with linespoints lw 2 lc 3 dt 1 pt 7 title 'Monsoon POST /jobs/sleep 100ms', \
     $d5 using 1:2 with linespoints lw 2 lc 3 dt 2 pt 6 title 'peer POST /jobs/sleep 100ms'
