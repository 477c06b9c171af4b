# find_package(ibex) for an installed ibex (bindings/cpp/install.sh lays it out):
#   PREFIX/include/ibex.h, ibex.hpp; PREFIX/lib/libibex.so (and libibex.a);
#   PREFIX/lib/cmake/ibex/ibexConfig.cmake (this file).
# Targets: ibex::ibex (the shared library, C and C++17 headers), ibex::ibex_static.
# Executables linked to ibex::ibex get the library's directory as their build-tree RPATH; set
# INSTALL_RPATH (or install libibex.so where the loader looks) for installed executables.
get_filename_component(_ibex_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

if(NOT TARGET ibex::ibex)
  add_library(ibex::ibex SHARED IMPORTED)
  set_target_properties(ibex::ibex PROPERTIES
    IMPORTED_LOCATION "${_ibex_prefix}/lib/libibex.so"
    IMPORTED_NO_SONAME TRUE
    INTERFACE_INCLUDE_DIRECTORIES "${_ibex_prefix}/include")
endif()

if(NOT TARGET ibex::ibex_static AND EXISTS "${_ibex_prefix}/lib/libibex.a")
  find_package(Threads REQUIRED)
  add_library(ibex::ibex_static STATIC IMPORTED)
  set_target_properties(ibex::ibex_static PROPERTIES
    IMPORTED_LOCATION "${_ibex_prefix}/lib/libibex.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_ibex_prefix}/include"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m;rt;util;gcc_s;stdc++")
endif()

set(ibex_INCLUDE_DIRS "${_ibex_prefix}/include")
set(ibex_LIBRARIES ibex::ibex)
unset(_ibex_prefix)
