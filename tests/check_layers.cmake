# Checks that every source file includes only its own layer and the layers below it (README,
# "Layout"); run by CTest as layers_test: cmake -DSOURCE_DIR=... -P tests/check_layers.cmake.
# Tests (*_test.cpp) may include anything. The libraries are linked only downward too, so a call
# into a layer above fails to link; this catches what linking cannot: a header-only use.
#
# Each rule: folder;allowed include prefixes (quoted includes), and whether angle-bracket includes
# must be C++ standard headers only (no '/' and no '.h': no OS, no third-party library).
set(rules
  "common|common/|std"
  "protocol|protocol/,common/|any"
  "memguard|memguard/,common/|any"
  "history|history/,common/|any"
  "worker|worker/,protocol/,common/|any"
  "orchestrator/core|orchestrator/core/,common/|std"
  "orchestrator/batch|orchestrator/batch/,orchestrator/core/,protocol/,history/,common/|any"
  "orchestrator/platform|orchestrator/platform/,orchestrator/batch/,orchestrator/core/,protocol/,memguard/,history/,common/|any"
  "orchestrator/cli|orchestrator/,protocol/,memguard/,history/,common/|any")
set(bad 0)
foreach(rule IN LISTS rules)
  string(REPLACE "|" ";" parts "${rule}")
  list(GET parts 0 folder)
  list(GET parts 1 allowed)
  list(GET parts 2 angle)
  string(REPLACE "," ";" allowed "${allowed}")
  file(GLOB_RECURSE files "${SOURCE_DIR}/${folder}/*.h" "${SOURCE_DIR}/${folder}/*.cpp")
  foreach(f IN LISTS files)
    if(f MATCHES "_test\\.cpp$")
      continue()
    endif()
    file(RELATIVE_PATH rel "${SOURCE_DIR}" "${f}")
    file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include")
    foreach(line IN LISTS lines)
      if(line MATCHES "#[ \t]*include[ \t]*\"([^\"]+)\"")
        set(inc "${CMAKE_MATCH_1}")
        set(ok 0)
        foreach(prefix IN LISTS allowed)
          string(FIND "${inc}" "${prefix}" at)
          if(at EQUAL 0)
            set(ok 1)
          endif()
        endforeach()
        if(NOT ok)
          message(SEND_ERROR "${rel}: includes \"${inc}\", which is not in its layer or below it (${allowed})")
          set(bad 1)
        endif()
      elseif(angle STREQUAL "std" AND line MATCHES "#[ \t]*include[ \t]*<([^>]+)>")
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
