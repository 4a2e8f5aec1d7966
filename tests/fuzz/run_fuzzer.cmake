# Runs one libFuzzer binary for a bounded number of inputs, starting from a fresh copy of
# its seed files, so that nothing is ever written into the source tree.
#
#   cmake -DFUZZER=path/to/binary -DWORK=build/dir -DSEEDS="dir1|dir2" -DPATTERN="*.json"
#         -DRUNS=20000 -P run_fuzzer.cmake
#
# WORK/corpus holds the copied seeds plus what the run discovers; a crashing input is
# written to WORK/crash-* (its path is printed).
foreach(var FUZZER WORK SEEDS PATTERN RUNS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_fuzzer.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT EXISTS "${FUZZER}")
  message(FATAL_ERROR "fuzzer ${FUZZER} was not built")
endif()

file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/corpus")
string(REPLACE "|" ";" seed_dirs "${SEEDS}")
set(seed_count 0)
foreach(dir IN LISTS seed_dirs)
  file(GLOB seeds "${dir}/${PATTERN}")
  list(LENGTH seeds n)
  math(EXPR seed_count "${seed_count} + ${n}")
  if(seeds)
    file(COPY ${seeds} DESTINATION "${WORK}/corpus")
  endif()
endforeach()
if(seed_count EQUAL 0)
  message(FATAL_ERROR "no seeds matching ${PATTERN} in ${SEEDS}")
endif()

# Leak checking stays on; a slow input (-timeout) or an allocation past -rss_limit_mb
# counts as a failure like a crash.
set(ENV{ASAN_OPTIONS} "abort_on_error=0:detect_leaks=1")
set(ENV{UBSAN_OPTIONS} "print_stacktrace=1:halt_on_error=1")
execute_process(
  COMMAND "${FUZZER}" -runs=${RUNS} -max_len=4096 -timeout=10 -rss_limit_mb=2048
          -max_total_time=50 -print_final_stats=1 "-artifact_prefix=${WORK}/"
          "${WORK}/corpus"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (exit ${rc}); the input is saved under ${WORK}/")
endif()
message(STATUS "${FUZZER}: ${RUNS} runs from ${seed_count} seeds, no failure")
