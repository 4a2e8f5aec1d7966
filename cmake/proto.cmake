# moe_proto_library(NAME PROTOS ...): C++ messages and gRPC stubs from proto/, compiled
# with Debian's protoc and grpc_cpp_plugin into a static library.
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_program(MOE_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

function(moe_proto_library name)
  cmake_parse_arguments(ARG "" "" "PROTOS" ${ARGN})
  set(out_dir ${PROJECT_BINARY_DIR}/proto_gen)
  set(srcs)
  foreach(proto ${ARG_PROTOS})
    get_filename_component(abs ${proto} ABSOLUTE)
    file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR}/proto ${abs})
    string(REGEX REPLACE "\\.proto$" "" base ${rel})
    set(gen ${out_dir}/${base}.pb.cc ${out_dir}/${base}.pb.h
            ${out_dir}/${base}.grpc.pb.cc ${out_dir}/${base}.grpc.pb.h)
    add_custom_command(
      OUTPUT ${gen}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
      COMMAND protobuf::protoc -I ${PROJECT_SOURCE_DIR}/proto
              --cpp_out=${out_dir} --grpc_out=${out_dir}
              --plugin=protoc-gen-grpc=${MOE_GRPC_CPP_PLUGIN} ${abs}
      DEPENDS ${abs} protobuf::protoc
      COMMENT "protoc ${rel}")
    list(APPEND srcs ${out_dir}/${base}.pb.cc ${out_dir}/${base}.grpc.pb.cc)
  endforeach()
  add_library(${name} STATIC ${srcs})
  target_include_directories(${name} PUBLIC ${out_dir})
  target_link_libraries(${name} PUBLIC protobuf::libprotobuf gRPC::grpc++)
endfunction()
