// One symbol so the alias and its stub are well-formed shared objects; nothing
// calls it (see CMakeLists.txt for why these libraries exist).
extern "C" __attribute__((visibility("default"))) void dcn_deploy_rtx_soname() {}
