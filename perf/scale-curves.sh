#!/bin/bash
# Issue 20's scale curves with Broker.Perf: message size, consumers per group, backlog depth.
cd /work/main
P="dotnet perf/Broker.Perf/bin/Release/net10.0/Broker.Perf.dll"
run() { echo "=== $*"; $P "$@" 2>&1 | grep -E "publish msg/s|end-to-end msg/s|drain msg/s|publish→ack|publish→deliver|broker CPU s per|broker peak RSS|result|missing" ; }
for size in 100 1024 4096 16384 65536; do
  n=400000; [ $size -ge 16384 ] && n=100000; [ $size -ge 65536 ] && n=40000
  run W2 --payload $size --messages $n --warmup 200000
done
for c in 1 4 16 64 256; do run W2 --consumers $c --warmup 200000; done
for n in 100000 1000000 3000000 10000000; do run W3 --messages $n --warmup 200000; done
echo DONE
