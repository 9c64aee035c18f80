# Sourced by the ncu_*.sh experiments: ncu_profile REPORT COMMAND... profiles the command's region between
# cudaProfilerStart/Stop (bench/experiments/profiled_call.py) with the sections the experiments compare,
# writes REPORT.ncu-rep, REPORT.txt (details) and REPORT.raw.txt (raw metrics), and prints the lines read
# first: durations, throughputs, occupancy, launch shape, tensor-pipe activity and issue-stall samples.
ncu_profile() {
  local rep=$1; shift
  ncu --clock-control none --profile-from-start off --section SpeedOfLight --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --section SchedulerStats --section WarpStateStats --section Occupancy \
    --section LaunchStats -o "$rep" -f "$@" 2>&1 | grep -v "^==PROF==" | tail -3
  ncu --import "$rep.ncu-rep" --print-units base --page details > "$rep.txt"
  ncu --import "$rep.ncu-rep" --print-units base --page raw > "$rep.raw.txt"
  grep -E "^  [a-zA-Z_0-9]|Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Issue Slots Busy|Achieved Occupancy|Registers Per|Grid Size|Block Size|Waves Per SM|Dynamic Shared|No Eligible|Eligible Warps|Warp Cycles Per Issued" \
    "$rep.txt" | head -40
  grep -E "pipe_tensor.*(cycles_active|inst_executed).*(pct|sum)|smsp__pcsamp_warps_issue_stalled_(long_scoreboard|barrier|wait|math_pipe_throttle|mio_throttle|lg_throttle|short_scoreboard|membar|sleeping|dispatch_stall|no_instruction|selected)[^_]" \
    "$rep.raw.txt" | head -30
}
