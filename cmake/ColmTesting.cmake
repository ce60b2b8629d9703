# colm_add_test(NAME SOURCES ... [LIBRARIES ...]): one Catch2 executable per topic, discovered by CTest.
include_guard(GLOBAL)
find_package(Catch2 2 REQUIRED)
include(Catch)
function(colm_add_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBRARIES" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE colm_test_main colm_core ${T_LIBRARIES})
  colm_use_pch(${name})
  add_dependencies(${name} colm_plugins)
  catch_discover_tests(${name}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
    PROPERTIES ENVIRONMENT "COLM_BUILD_DIR=${CMAKE_BINARY_DIR};COLM_SOURCE_DIR=${CMAKE_SOURCE_DIR}"
    DISCOVERY_TIMEOUT 60)
endfunction()
