# Installing Pipeforge as a CMake package: the static libraries, their
# headers (include/ir/..., include/runtime/..., as in the source tree) and
# pipeforgeConfig.cmake, so that a user project embeds the runtime with
#   find_package(pipeforge REQUIRED)
#   target_link_libraries(app PRIVATE pipeforge::runtime)
# (see examples/embed; tests/embed checks it against a fresh install).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(PF_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/pipeforge)

# Exported as pipeforge::<name>. pf_warnings is only ever linked PRIVATE, but a
# static library's private dependencies are recorded for linking
# ($<LINK_ONLY:...>), so it must be in the export set; it carries no flags to
# users (compile options of a LINK_ONLY dependency do not propagate).
set_target_properties(pf_ir PROPERTIES EXPORT_NAME ir)
set_target_properties(pf_support PROPERTIES EXPORT_NAME support)
set_target_properties(pf_plan PROPERTIES EXPORT_NAME plan)
set_target_properties(pf_passes PROPERTIES EXPORT_NAME passes)
set_target_properties(pf_partitioner PROPERTIES EXPORT_NAME partitioner)
set_target_properties(pf_backend_core PROPERTIES EXPORT_NAME backend_core)
set_target_properties(pf_cpu PROPERTIES EXPORT_NAME cpu)
set_target_properties(pf_comm PROPERTIES EXPORT_NAME comm)
set_target_properties(pf_schedule PROPERTIES EXPORT_NAME schedule)
set_target_properties(pf_runtime PROPERTIES EXPORT_NAME runtime)
set_target_properties(pf_warnings PROPERTIES EXPORT_NAME warnings)
# The headers need C++20; users get it with the library.
target_compile_features(pf_ir INTERFACE cxx_std_20)
set(pf_installed_libraries pf_ir pf_support pf_plan pf_passes pf_partitioner pf_backend_core pf_cpu pf_comm pf_schedule pf_runtime
                           pf_warnings)
set(pf_installed_headers ir support plan passes partitioner comm runtime backends/common backends/cpu)
if(PF_CUDA)
  # The runtime places stages on GPUs through the CUDA backend: its library
  # comes along, and the config finds the CUDA toolkit for it.
  set_target_properties(pf_cuda PROPERTIES EXPORT_NAME cuda)
  list(APPEND pf_installed_libraries pf_cuda)
  list(APPEND pf_installed_headers backends/cuda)
endif()
install(TARGETS ${pf_installed_libraries}
        EXPORT pipeforgeTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# The headers keep their folders: "runtime/runtime.h" includes "ir/types.h".
foreach(dir ${pf_installed_headers})
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/${dir}
          FILES_MATCHING PATTERN "*.h" PATTERN "*.def")
endforeach()

install(EXPORT pipeforgeTargets NAMESPACE pipeforge:: DESTINATION ${PF_INSTALL_CMAKEDIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/pipeforgeConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/pipeforgeConfig.cmake INSTALL_DESTINATION ${PF_INSTALL_CMAKEDIR})
# 0.x: a minor version may change the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/pipeforgeConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/pipeforgeConfig.cmake ${PROJECT_BINARY_DIR}/pipeforgeConfigVersion.cmake
        DESTINATION ${PF_INSTALL_CMAKEDIR})
