# Checks that every source file includes only its own layer and the layers below it (README,
# "Layout"); run by CTest as layers_test: cmake -DSOURCE_DIR=... -P tests/check_layers.cmake.
# A layer's tests (*_test.cpp) follow its rule too, plus tests/ (the shared test helpers) and any
# angle-bracket header (doctest): a layer is tested without the layers above it. The libraries
# are linked only downward too, so a call into a layer above fails to link; this catches what
# linking cannot: a header-only use.
#
# Each rule: folder;allowed include prefixes (quoted includes); whether angle-bracket includes
# must be C++ standard headers only (no '/' and no '.h': no OS, no third-party library); and
# optionally what its tests may include beyond that and tests/.
set(rules
  "common|common/|std"
  "protocol|protocol/,common/|any"
  "memguard|memguard/,common/|any"
  "history|history/,common/|any"
  "worker|worker/,protocol/,common/|any"
  "orchestrator/core|orchestrator/core/,common/|std"
  "orchestrator/batch|orchestrator/batch/,orchestrator/core/,protocol/,history/,common/|any"
  "orchestrator/platform|orchestrator/platform/,orchestrator/batch/,orchestrator/core/,protocol/,memguard/,history/,common/|any"
  "orchestrator/cli|orchestrator/,protocol/,memguard/,history/,common/|any|worker/")  # tests: the worker's defaults
set(bad 0)
foreach(rule IN LISTS rules)
  string(REPLACE "|" ";" parts "${rule}")
  list(GET parts 0 folder)
  list(GET parts 1 allowed)
  list(GET parts 2 angle)
  set(test_extra "tests/")
  list(LENGTH parts n)
  if(n GREATER 3)
    list(GET parts 3 more)
    string(REPLACE "," ";" more "${more}")
    list(APPEND test_extra ${more})
  endif()
  string(REPLACE "," ";" allowed "${allowed}")
  file(GLOB_RECURSE files "${SOURCE_DIR}/${folder}/*.h" "${SOURCE_DIR}/${folder}/*.cpp")
  foreach(f IN LISTS files)
    set(test_file 0)
    set(allowed_here ${allowed})
    if(f MATCHES "_test\\.cpp$")
      set(test_file 1)
      list(APPEND allowed_here ${test_extra})
    endif()
    file(RELATIVE_PATH rel "${SOURCE_DIR}" "${f}")
    file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include")
    foreach(line IN LISTS lines)
      if(line MATCHES "#[ \t]*include[ \t]*\"([^\"]+)\"")
        set(inc "${CMAKE_MATCH_1}")
        set(ok 0)
        foreach(prefix IN LISTS allowed_here)
          string(FIND "${inc}" "${prefix}" at)
          if(at EQUAL 0)
            set(ok 1)
          endif()
        endforeach()
        if(NOT ok)
          message(SEND_ERROR "${rel}: includes \"${inc}\", which is not in its layer or below it (${allowed_here})")
          set(bad 1)
        endif()
      elseif(angle STREQUAL "std" AND NOT test_file AND line MATCHES "#[ \t]*include[ \t]*<([^>]+)>")
        set(inc "${CMAKE_MATCH_1}")
        if(inc MATCHES "[/.]")
          message(SEND_ERROR "${rel}: includes <${inc}>; this layer uses the C++ standard library alone")
          set(bad 1)
        endif()
      endif()
    endforeach()
  endforeach()
endforeach()
if(bad)
  message(FATAL_ERROR "layer violations above")
endif()
message(STATUS "layers: every include is in its layer or below it")
