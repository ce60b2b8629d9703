# colm_add_test(NAME SOURCES ... [LIBRARIES ...]): one Catch2 executable per topic, discovered by CTest.
# A test case that cannot run prints "COLM-SKIP: <reason>" (tests/support.hpp, COLM_SKIP) and returns:
# Catch2 2.x has no skip of its own, so SKIP_REGULAR_EXPRESSION turns that line into CTest's "Skipped".
# (The build and source dirs reach the tests as compile definitions: see tests/CMakeLists.txt.)
include_guard(GLOBAL)
find_package(Catch2 2 REQUIRED)
include(Catch)
set(COLM_TEST_SKIP_MARKER "COLM-SKIP: ")
function(colm_add_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBRARIES" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE colm_test_main colm_core ${T_LIBRARIES})
  colm_use_pch(${name})
  add_dependencies(${name} colm_plugins)
  catch_discover_tests(${name}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
    # OpenMP threads sleep between parallel regions: CTest runs test processes side by side (-j).
    PROPERTIES SKIP_REGULAR_EXPRESSION "${COLM_TEST_SKIP_MARKER}" ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE"
    DISCOVERY_TIMEOUT 60)
endfunction()
