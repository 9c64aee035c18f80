# Byte-reproducible binaries: the same commit built in any directory gives the
# same objects and archives.
#  - no build or source paths in objects (__FILE__, debug info): map them away;
#  - ar in deterministic mode (zero timestamps, uids, gids and modes).
foreach(_dir IN ITEMS "${PROJECT_SOURCE_DIR}" "${PROJECT_BINARY_DIR}")
  add_compile_options("-ffile-prefix-map=${_dir}/=")
endforeach()
set(CMAKE_CXX_ARCHIVE_CREATE "<CMAKE_AR> qcD <TARGET> <LINK_FLAGS> <OBJECTS>")
set(CMAKE_CXX_ARCHIVE_APPEND "<CMAKE_AR> qD <TARGET> <LINK_FLAGS> <OBJECTS>")
set(CMAKE_CXX_ARCHIVE_FINISH "<CMAKE_RANLIB> -D <TARGET>")
