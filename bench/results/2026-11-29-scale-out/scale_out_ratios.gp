set terminal pngcairo size 1000,600 font ',10'
set output 'scale_out_ratios.png'
set title 'f. Scale-out: ratio to the baseline, per round'
set xlabel 'round'
set ylabel 'ratio (same round)'
set grid
set key outside right top
set datafile missing '?'
set xtics ('1' 1, '2' 2, '3' 3, '4' 4, '5' 5, '6' 6, '7' 7)
$d0 << EOD
1 1.00322
2 0.997312
3 0.998645
4 0.998749
5 1.00128
6 1.0012
7 0.983155
EOD
$d1 << EOD
1 0.995109
2 1.00038
3 0.998032
4 0.998085
5 0.988526
6 0.99977
7 0.998799
EOD
$d2 << EOD
1 1.08422
2 1.43513
3 1.19062
4 0.797039
5 1.05082
6 1.30207
7 1.32396
EOD
$d3 << EOD
1 1.90617
2 0.94
3 0.963597
4 2.5471
5 1.05837
6 0.694524
7 3.02135
EOD
$d4 << EOD
1 2.5081
2 1.43233
3 1.71303
4 1.11141
5 1.27455
6 1.10658
7 1.90766
EOD
$d5 << EOD
1 1.58025
2 0.801538
3 1.29122
4 0.79529
5 0.680934
6 0.881844
7 1.40569
EOD
$d6 << EOD
1 1.26606
2 0.841983
3 1.25108
4 0.872763
5 0.930084
6 0.931642
7 1.0678
EOD
plot $d0 using 1:2 with linespoints lw 2 lc 1 dt 1 pt 7 title 'Monsoon f1 sleep jobs/s, (ii)/(i)', \
     $d1 using 1:2 with linespoints lw 2 lc 2 dt 1 pt 7 title 'Monsoon f1 sleep jobs/s, (iii)/(i)', \
     $d2 using 1:2 with linespoints lw 2 lc 3 dt 1 pt 7 title 'Monsoon f2 echo req/s, 2 brokers/1', \
     $d3 using 1:2 with linespoints lw 2 lc 4 dt 1 pt 7 title 'Monsoon f2 /now p99, 2 brokers/1', \
     $d4 using 1:2 with linespoints lw 2 lc 5 dt 1 pt 7 title 'Monsoon f3 echo req/s, brokerless/broker', \
     $d5 using 1:2 with linespoints lw 2 lc 6 dt 1 pt 7 title 'Monsoon f3 /now p99, brokerless/broker', \
     $d6 using 1:2 with linespoints lw 2 lc 7 dt 1 pt 7 title 'Monsoon f4 echo req/s, 2 front ends/1'
