// The TensorRT plugin library through its two exported entry points, the way
// TensorRT uses it (dlopen, getCreators, setLoggerFinder, then only virtual
// calls), with small fakes for the TensorRT objects a plugin receives (logger,
// expression builder, resource context, error recorder). No libnvinfer.
//
//   test_trt_plugin <path to libdcn_deploy_trt.so>
//
// When a CUDA device is present, one FP32 problem also runs through enqueue()
// and is compared with the CPU reference; without one that test is skipped.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cpu/float_driver.h"
#include "core/int8_scales.h"
#include "core/params.h"
#include "test_harness.h"

using nvinfer1::DataType;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IPluginCreatorV3One;
using nvinfer1::IPluginV3;
using nvinfer1::IPluginV3OneBuild;
using nvinfer1::IPluginV3OneCore;
using nvinfer1::IPluginV3OneRuntime;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace {

const char* kNode = "backbone.layer3.0.conv2";

// ---------------------------------------------------------------------------
// Fakes of the TensorRT side.

class CapturingLogger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
    if (std::getenv("DCN_TEST_VERBOSE")) std::printf("  log: %s\n", msg);
    if (severity <= Severity::kWARNING) messages.emplace_back(msg);
  }
  std::string take() {
    std::string all;
    for (const std::string& message : messages) all += message + "\n";
    messages.clear();
    return all;
  }
  std::vector<std::string> messages;
};

CapturingLogger& logger() {
  static CapturingLogger instance;
  return instance;
}

class FakeLoggerFinder : public nvinfer1::ILoggerFinder {
 public:
  nvinfer1::ILogger* findLogger() override { return &logger(); }
};

class FakeErrorRecorder : public nvinfer1::IErrorRecorder {
 public:
  int32_t getNbErrors() const noexcept override { return static_cast<int32_t>(errors.size()); }
  nvinfer1::ErrorCode getErrorCode(int32_t index) const noexcept override { return errors[index].first; }
  ErrorDesc getErrorDesc(int32_t index) const noexcept override { return errors[index].second.c_str(); }
  bool hasOverflowed() const noexcept override { return false; }
  void clear() noexcept override { errors.clear(); }
  bool reportError(nvinfer1::ErrorCode code, ErrorDesc desc) noexcept override {
    errors.emplace_back(code, desc ? desc : "");
    return true;
  }
  RefCount incRefCount() noexcept override { return 1; }
  RefCount decRefCount() noexcept override { return 0; }
  std::vector<std::pair<nvinfer1::ErrorCode, std::string>> errors;
};

class FakeResourceContext : public nvinfer1::IPluginResourceContext {
 public:
  explicit FakeResourceContext(nvinfer1::IErrorRecorder* recorder) : recorder_(recorder) {}
  nvinfer1::IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
  nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override { return recorder_; }

 private:
  nvinfer1::IErrorRecorder* recorder_;
};

// Dimension expressions: constants, and "runtime" ones (a dynamic axis, -1 in
// FakeExprBuilder::dims) that are not constant; enough to evaluate getOutputShapes.
class ConstantExprImpl : public nvinfer1::apiv::VDimensionExpr {
 public:
  explicit ConstantExprImpl(int64_t value, bool constant = true) : value_(value), constant_(constant) {}
  bool isConstant() const override { return constant_; }
  int64_t getConstantValue() const override { return value_; }
  bool isSizeTensor() const override { return false; }

 private:
  int64_t value_;
  bool constant_;
};

class ConstantExpr : public nvinfer1::IDimensionExpr {
 public:
  explicit ConstantExpr(int64_t value, bool constant = true) : impl_(value, constant) { mImpl = &impl_; }
  ~ConstantExpr() override = default;

 private:
  ConstantExprImpl impl_;
};

class ExprBuilderImpl : public nvinfer1::apiv::VExprBuilder {
 public:
  nvinfer1::IDimensionExpr const* constant(int64_t value) override {
    expressions.push_back(std::make_unique<ConstantExpr>(value));
    return expressions.back().get();
  }
  nvinfer1::IDimensionExpr const* runtime() {
    expressions.push_back(std::make_unique<ConstantExpr>(-1, false));
    return expressions.back().get();
  }
  nvinfer1::IDimensionExpr const* operation(nvinfer1::DimensionOperation op, nvinfer1::IDimensionExpr const& first,
                                            nvinfer1::IDimensionExpr const& second) override {
    if (!first.isConstant() || !second.isConstant()) return runtime();
    const int64_t a = first.getConstantValue();
    const int64_t b = second.getConstantValue();
    switch (op) {
      case nvinfer1::DimensionOperation::kSUM:
        return constant(a + b);
      case nvinfer1::DimensionOperation::kPROD:
        return constant(a * b);
      case nvinfer1::DimensionOperation::kSUB:
        return constant(a - b);
      case nvinfer1::DimensionOperation::kFLOOR_DIV: {
        int64_t quotient = a / b;
        if ((a % b != 0) && ((a < 0) != (b < 0))) --quotient;
        return constant(quotient);
      }
      default:
        return nullptr;  // Not used by the plugin.
    }
  }
  nvinfer1::IDimensionExpr const* declareSizeTensor(int32_t, nvinfer1::IDimensionExpr const&,
                                                    nvinfer1::IDimensionExpr const&) override {
    return nullptr;
  }
  std::vector<std::unique_ptr<ConstantExpr>> expressions;
};

class FakeExprBuilder : public nvinfer1::IExprBuilder {
 public:
  FakeExprBuilder() { mImpl = &impl_; }
  ~FakeExprBuilder() override = default;
  nvinfer1::DimsExprs dims(const std::vector<int64_t>& values) {
    nvinfer1::DimsExprs result{};
    result.nbDims = static_cast<int32_t>(values.size());
    for (size_t i = 0; i < values.size(); ++i) result.d[i] = values[i] < 0 ? impl_.runtime() : constant(values[i]);
    return result;
  }

 private:
  ExprBuilderImpl impl_;
};

// ---------------------------------------------------------------------------
// The library under test.

struct Library {
  void* handle = nullptr;
  nvinfer1::IPluginCreatorInterface* const* (*get_creators)(int32_t&) = nullptr;
  void (*set_logger_finder)(nvinfer1::ILoggerFinder*) = nullptr;
};

std::string& library_path() {
  static std::string path;
  return path;
}

Library& library() {
  static Library lib = [] {
    Library loaded;
    loaded.handle = dlopen(library_path().c_str(), RTLD_NOW | RTLD_LOCAL);
    if (loaded.handle == nullptr) {
      std::fprintf(stderr, "dlopen(%s) failed: %s\n", library_path().c_str(), dlerror());
      return loaded;
    }
    loaded.get_creators = reinterpret_cast<nvinfer1::IPluginCreatorInterface* const* (*)(int32_t&)>(
        dlsym(loaded.handle, "getCreators"));
    loaded.set_logger_finder =
        reinterpret_cast<void (*)(nvinfer1::ILoggerFinder*)>(dlsym(loaded.handle, "setLoggerFinder"));
    if (loaded.set_logger_finder) {
      static FakeLoggerFinder finder;
      loaded.set_logger_finder(&finder);
    }
    return loaded;
  }();
  return lib;
}

constexpr int32_t kCreators = 3;  // DcnDeformConv, DcnDeformConvInt8, DcnDeformConvInt8Requantized

// The creator of plugin `name` among the library's creators.
IPluginCreatorV3One* creator(const std::string& name = "DcnDeformConv") {
  Library& lib = library();
  if (lib.get_creators == nullptr) return nullptr;
  int32_t count = -1;
  nvinfer1::IPluginCreatorInterface* const* creators = lib.get_creators(count);
  if (creators == nullptr || count != kCreators) return nullptr;
  for (int32_t i = 0; i < count; ++i) {
    auto* candidate = static_cast<IPluginCreatorV3One*>(creators[i]);
    if (name == candidate->getPluginName()) return candidate;
  }
  return nullptr;
}

// Plugin fields as TensorRT's ONNX parser passes them (ints as kINT32, plus
// the routing strings), optionally edited.
struct ParserFields {
  std::map<std::string, std::vector<int32_t>> ints = {
      {"kernel_shape", {3, 2}}, {"strides", {2, 1}}, {"pads", {1, 0, 2, 1}},
      {"dilations", {1, 2}},    {"group", {2}},      {"offset_group", {2}},
  };
  std::map<std::string, std::vector<float>> floats;  // INT8 scales (kFLOAT32)
  std::string plugin_namespace = "dcn_deploy";
  std::string plugin_version = "1";
  std::vector<PluginField> fields;
  PluginFieldCollection collection{};

  const PluginFieldCollection* build() {
    fields.clear();
    for (const auto& [name, values] : ints) {
      fields.emplace_back(name.c_str(), values.data(), PluginFieldType::kINT32, static_cast<int32_t>(values.size()));
    }
    for (const auto& [name, values] : floats) {
      fields.emplace_back(name.c_str(), values.data(), PluginFieldType::kFLOAT32,
                          static_cast<int32_t>(values.size()));
    }
    fields.emplace_back("plugin_namespace", plugin_namespace.data(), PluginFieldType::kCHAR,
                        static_cast<int32_t>(plugin_namespace.size()));
    fields.emplace_back("plugin_version", plugin_version.data(), PluginFieldType::kCHAR,
                        static_cast<int32_t>(plugin_version.size()));
    collection.nbFields = static_cast<int32_t>(fields.size());
    collection.fields = fields.data();
    return &collection;
  }
};

struct PluginDeleter {
  void operator()(IPluginV3* plugin) const { delete plugin; }
};
using PluginPtr = std::unique_ptr<IPluginV3, PluginDeleter>;

PluginPtr create(ParserFields& fields, const char* name = kNode,
                 nvinfer1::TensorRTPhase phase = nvinfer1::TensorRTPhase::kBUILD,
                 const std::string& plugin = "DcnDeformConv") {
  IPluginCreatorV3One* plugin_creator = creator(plugin);
  if (plugin_creator == nullptr) return nullptr;
  return PluginPtr(plugin_creator->createPlugin(name, fields.build(), phase));
}

IPluginV3OneCore* core(IPluginV3* plugin) {
  return static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
}
IPluginV3OneBuild* build(IPluginV3* plugin) {
  return static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
}
IPluginV3OneRuntime* runtime(IPluginV3* plugin) {
  return static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
}

PluginTensorDesc desc(const std::vector<int64_t>& dims, DataType type = DataType::kFLOAT,
                      TensorFormat format = TensorFormat::kLINEAR) {
  PluginTensorDesc result{};
  result.dims.nbDims = static_cast<int32_t>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) result.dims.d[i] = dims[i];
  result.type = type;
  result.format = format;
  result.scale = 1.0F;
  return result;
}

// Whether float16 channels-last X needing `bytes` of shared memory per block (the tensor-core
// kernel's: 66 KiB at least, its 128x128 tile's epilogue) is offered: only on a device of compute
// capability 7.0+ allowing that much; never ahead of time (no device), where the plugin assumes
// sm_75's 64 KiB, the smallest target TensorRT-RTX builds for.
bool channels_last_offered(int bytes) {
  int count = 0, major = 0, shared = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess ||
      cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) != cudaSuccess) {
    return false;
  }
  return major >= 7 && shared >= bytes;
}

DynamicPluginTensorDesc dynamic(const PluginTensorDesc& tensor) {
  DynamicPluginTensorDesc result{};
  result.desc = tensor;
  result.min = tensor.dims;
  result.opt = tensor.dims;
  result.max = tensor.dims;
  return result;
}

// Attributes of ParserFields: kernel 3x2, strides 2x1, pads (1,0,2,1),
// dilations 1x2, group 2, offset_group 2. X [2, 4, 9, 7]:
// Ho = floor((9+1+2-3)/2)+1 = 5, Wo = floor((7+0+1-3)/1)+1 = 6.
struct Problem {
  std::vector<int64_t> x = {2, 4, 9, 7};
  std::vector<int64_t> w = {6, 2, 3, 2};
  std::vector<int64_t> offset = {2, 24, 5, 6};
  std::vector<int64_t> bias = {6};
  std::vector<int64_t> mask = {2, 12, 5, 6};
  std::vector<int64_t> y = {2, 6, 5, 6};
};

std::vector<PluginTensorDesc> inputs_of(const Problem& p, bool with_bias, bool with_mask,
                                        DataType data = DataType::kFLOAT, DataType offset = DataType::kFLOAT) {
  std::vector<PluginTensorDesc> inputs = {desc(p.x, data), desc(p.w, data), desc(p.offset, offset)};
  if (with_bias) inputs.push_back(desc(p.bias, data));
  if (with_mask) inputs.push_back(desc(p.mask, offset));
  return inputs;
}

}  // namespace

TEST(entry_points_and_creator) {
  Library& lib = library();
  CHECK(lib.handle != nullptr);
  CHECK(lib.get_creators != nullptr);
  CHECK(lib.set_logger_finder != nullptr);
  int32_t count = -1;
  CHECK(lib.get_creators(count) != nullptr);
  CHECK_EQ(count, kCreators);
  IPluginCreatorV3One* plugin_creator = creator();
  CHECK(plugin_creator != nullptr);
  if (plugin_creator == nullptr) return;
  CHECK_EQ(std::string(plugin_creator->getInterfaceInfo().kind), std::string("PLUGIN CREATOR_V3ONE"));
  CHECK_EQ(std::string(plugin_creator->getPluginName()), std::string("DcnDeformConv"));
  CHECK_EQ(std::string(plugin_creator->getPluginVersion()), std::string("1"));
  CHECK_EQ(std::string(plugin_creator->getPluginNamespace()), std::string("dcn_deploy"));
  const PluginFieldCollection* names = plugin_creator->getFieldNames();
  CHECK(names != nullptr);
  if (names == nullptr) return;
  CHECK_EQ(names->nbFields, 6);
  std::string listed;
  for (int32_t i = 0; i < names->nbFields; ++i) listed += std::string(names->fields[i].name) + " ";
  CHECK_EQ(listed, std::string("kernel_shape strides pads dilations group offset_group "));
}

TEST(create_from_onnx_parser_fields) {
  ParserFields fields;
  PluginPtr plugin = create(fields);
  CHECK(plugin != nullptr);
  if (!plugin) return;
  CHECK_EQ(std::string(plugin->getInterfaceInfo().kind), std::string("PLUGIN"));
  CHECK_EQ(std::string(core(plugin.get())->getPluginName()), std::string("DcnDeformConv"));
  CHECK_EQ(std::string(core(plugin.get())->getPluginVersion()), std::string("1"));
  CHECK_EQ(std::string(core(plugin.get())->getPluginNamespace()), std::string("dcn_deploy"));
  CHECK_EQ(std::string(build(plugin.get())->getInterfaceInfo().kind), std::string("PLUGIN_V3ONE_BUILD"));
  CHECK_EQ(std::string(runtime(plugin.get())->getInterfaceInfo().kind), std::string("PLUGIN_V3ONE_RUNTIME"));
  CHECK_EQ(build(plugin.get())->getNbOutputs(), 1);
  CHECK_CONTAINS(build(plugin.get())->getTimingCacheID(), "kernel_shape=[3, 2] strides=[2, 1] pads=[1, 0, 2, 1]");
  CHECK_EQ(logger().take(), std::string());
}

TEST(create_errors_are_logged_and_return_null) {
  logger().take();
  {
    ParserFields fields;
    fields.ints.erase("pads");
    CHECK(create(fields) == nullptr);
    const std::string log = logger().take();
    CHECK_CONTAINS(log, std::string("DcnDeformConv node '") + kNode + "'");
    CHECK_CONTAINS(log, "plugin field 'pads' is missing");
  }
  {
    ParserFields fields;
    fields.ints["strides"] = {1, 1, 1};
    CHECK(create(fields) == nullptr);
    CHECK_CONTAINS(logger().take(), "plugin field 'strides' has 3 values, expected 2");
  }
  {
    ParserFields fields;
    fields.ints["group"] = {0};
    CHECK(create(fields) == nullptr);
    CHECK_CONTAINS(logger().take(), "attribute 'group' must be >= 1, got 0");
  }
  {
    ParserFields fields;
    fields.build();
    static const float kFloat = 1.0F;
    fields.fields[0] = PluginField("dilations", &kFloat, PluginFieldType::kFLOAT32, 1);
    IPluginCreatorV3One* plugin_creator = creator();
    CHECK(plugin_creator != nullptr);
    if (plugin_creator) {
      PluginPtr plugin(plugin_creator->createPlugin(kNode, &fields.collection, nvinfer1::TensorRTPhase::kBUILD));
      CHECK(plugin == nullptr);
      CHECK_CONTAINS(logger().take(), "plugin field 'dilations' has type kFLOAT32, expected kINT32 or kINT64");
    }
  }
  {
    ParserFields fields;
    CHECK(create(fields, nullptr) != nullptr);  // Unnamed layers are fine.
    fields.ints.erase("group");
    CHECK(create(fields, nullptr) == nullptr);
    CHECK_CONTAINS(logger().take(), "DcnDeformConv node 'DcnDeformConv': plugin field 'group' is missing");
  }
  IPluginCreatorV3One* plugin_creator = creator();
  if (plugin_creator) {
    CHECK(plugin_creator->createPlugin(kNode, nullptr, nvinfer1::TensorRTPhase::kBUILD) == nullptr);
    CHECK_CONTAINS(logger().take(), "no plugin field collection");
  }
}

TEST(serialised_fields_recreate_the_plugin) {
  ParserFields fields;
  PluginPtr plugin = create(fields);
  CHECK(plugin != nullptr);
  if (!plugin) return;
  const PluginFieldCollection* serialized = runtime(plugin.get())->getFieldsToSerialize();
  CHECK(serialized != nullptr);
  if (!serialized) return;
  CHECK_EQ(serialized->nbFields, 6);
  for (int32_t i = 0; i < serialized->nbFields; ++i) {
    CHECK(serialized->fields[i].type == PluginFieldType::kINT64);
  }
  PluginPtr restored(creator()->createPlugin(kNode, serialized, nvinfer1::TensorRTPhase::kRUNTIME));
  CHECK(restored != nullptr);
  if (!restored) return;
  CHECK_EQ(std::string(build(restored.get())->getTimingCacheID()), std::string(build(plugin.get())->getTimingCacheID()));
  CHECK_EQ(std::string(build(restored.get())->getMetadataString()),
           std::string("kernel_shape=[3, 2] strides=[2, 1] pads=[1, 0, 2, 1] dilations=[1, 2] group=2 offset_group=2"));

  // A corrupted serialisation is reported, not crashed on.
  std::vector<PluginField> corrupted(serialized->fields, serialized->fields + serialized->nbFields);
  corrupted[2].length = 3;
  PluginFieldCollection corrupted_collection{static_cast<int32_t>(corrupted.size()), corrupted.data()};
  CHECK(creator()->createPlugin(kNode, &corrupted_collection, nvinfer1::TensorRTPhase::kRUNTIME) == nullptr);
  const std::string log = logger().take();
  CHECK_CONTAINS(log, "plugin field 'pads' has 3 values, expected 4");
  CHECK_CONTAINS(log, "while deserialising an engine");
}

TEST(output_types_follow_x) {
  ParserFields fields;
  PluginPtr plugin = create(fields);
  if (!plugin) return;
  IPluginV3OneBuild* b = build(plugin.get());
  DataType out = DataType::kINT8;
  const DataType half_inputs[] = {DataType::kHALF, DataType::kHALF, DataType::kFLOAT, DataType::kHALF};
  CHECK_EQ(b->getOutputDataTypes(&out, 1, half_inputs, 4), 0);
  CHECK(out == DataType::kHALF);
  const DataType float_inputs[] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kHALF};
  CHECK_EQ(b->getOutputDataTypes(&out, 1, float_inputs, 3), 0);
  CHECK(out == DataType::kFLOAT);
  const DataType int_inputs[] = {DataType::kINT32, DataType::kINT32, DataType::kFLOAT};
  CHECK(b->getOutputDataTypes(&out, 1, int_inputs, 3) != 0);
  CHECK_CONTAINS(logger().take(), "input X has type int32, expected float32 or float16");
  CHECK(b->getOutputDataTypes(&out, 1, float_inputs, 2) != 0);
  CHECK_CONTAINS(logger().take(), "expects 3 to 5 inputs");
}

TEST(output_shapes_from_expressions) {
  ParserFields fields;
  PluginPtr plugin = create(fields);
  if (!plugin) return;
  IPluginV3OneBuild* b = build(plugin.get());
  Problem p;
  for (int32_t count : {3, 4, 5}) {
    FakeExprBuilder builder;
    std::vector<nvinfer1::DimsExprs> inputs = {builder.dims(p.x), builder.dims(p.w), builder.dims(p.offset)};
    if (count >= 4) inputs.push_back(builder.dims(count == 4 ? p.mask : p.bias));
    if (count == 5) inputs.push_back(builder.dims(p.mask));
    nvinfer1::DimsExprs output{};
    CHECK_EQ(b->getOutputShapes(inputs.data(), count, nullptr, 0, &output, 1, builder), 0);
    CHECK_EQ(output.nbDims, 4);
    if (output.nbDims != 4) continue;
    std::vector<int64_t> values;
    for (int32_t i = 0; i < 4; ++i) values.push_back(output.d[i]->getConstantValue());
    CHECK(values == p.y);
  }
  // Ho, Wo of a few more inputs against the shared formula.
  for (int64_t h : {1, 2, 3, 8, 31}) {
    for (int64_t w : {1, 4, 5, 17}) {
      FakeExprBuilder builder;
      const int64_t ho = dcn_deploy::output_extent(h, 1, 2, 3, 2, 1);
      const int64_t wo = dcn_deploy::output_extent(w, 0, 1, 2, 1, 2);
      std::vector<nvinfer1::DimsExprs> inputs = {builder.dims({1, 4, h, w}), builder.dims(p.w),
                                                 builder.dims({1, 24, ho, wo})};
      nvinfer1::DimsExprs output{};
      if (ho < 1 || wo < 1) {  // A static input too small for the kernel fails when the layer is added.
        CHECK(b->getOutputShapes(inputs.data(), 3, nullptr, 0, &output, 1, builder) != 0);
        CHECK_CONTAINS(logger().take(), "output would be empty");
        continue;
      }
      CHECK_EQ(b->getOutputShapes(inputs.data(), 3, nullptr, 0, &output, 1, builder), 0);
      CHECK_EQ(output.d[2]->getConstantValue(), ho);
      CHECK_EQ(output.d[3]->getConstantValue(), wo);
    }
  }
  FakeExprBuilder builder;
  std::vector<nvinfer1::DimsExprs> bad = {builder.dims(p.x), builder.dims(p.w), builder.dims(p.offset),
                                          builder.dims({2, 6})};
  nvinfer1::DimsExprs output{};
  CHECK(b->getOutputShapes(bad.data(), 4, nullptr, 0, &output, 1, builder) != 0);
  CHECK_CONTAINS(logger().take(), "4th input must be bias B [M] (rank 1) or mask");
}

// Dynamic N/H/W (not constant): the constant dims are still checked when the
// layer is added, e.g. offset channels against offset_group (a wrong
// offset_group must not build an engine).
TEST(output_shapes_check_constant_dims_of_dynamic_inputs) {
  ParserFields fields;
  PluginPtr plugin = create(fields);
  if (!plugin) return;
  IPluginV3OneBuild* b = build(plugin.get());
  logger().take();
  auto shapes = [&](std::vector<std::vector<int64_t>> dims) {
    FakeExprBuilder builder;
    std::vector<nvinfer1::DimsExprs> inputs;
    for (const auto& d : dims) inputs.push_back(builder.dims(d));
    nvinfer1::DimsExprs output{};
    const int32_t status =
        b->getOutputShapes(inputs.data(), static_cast<int32_t>(inputs.size()), nullptr, 0, &output, 1, builder);
    if (status == 0) CHECK(!output.d[0]->isConstant() && output.d[1]->getConstantValue() == 6);
    return status;
  };
  const std::vector<int64_t> x = {-1, 4, -1, -1}, w = {6, 2, 3, 2};
  CHECK_EQ(shapes({x, w, {-1, 24, -1, -1}, {6}, {-1, 12, -1, -1}}), 0);
  CHECK_EQ(logger().take(), std::string());
  CHECK(shapes({x, w, {-1, 12, -1, -1}}) != 0);  // offset_group 1 where the node says 2
  CHECK_CONTAINS(logger().take(), "offset has 12 channels, expected 2*offset_group*kh*kw = 24 (offset_group=2");
  CHECK(shapes({x, w, {-1, 24, -1, -1}, {-1, 6, -1, -1}}) != 0);
  CHECK_CONTAINS(logger().take(), "mask has 6 channels, expected offset_group*kh*kw = 12");
  CHECK(shapes({x, {6, 2, 3, 3}, {-1, 24, -1, -1}}) != 0);
  CHECK_CONTAINS(logger().take(), "attribute 'kernel_shape' is 3x2 but weight W has spatial size 3x3");
  CHECK(shapes({x, {6, 4, 3, 2}, {-1, 24, -1, -1}}) != 0);
  CHECK_CONTAINS(logger().take(), "weight W has 4 input channels per group (dim 1), expected C/group = 2");
  CHECK(shapes({x, w, {-1, 24, -1, -1}, {0}}) != 0);
  CHECK_CONTAINS(logger().take(), "bias B has 0 elements, expected M = 6");
  CHECK(shapes({{-1, 3, -1, -1}, w, {-1, 24, -1, -1}}) != 0);
  CHECK_CONTAINS(logger().take(), "input X has C=3 channels, not divisible by group=2");
}

TEST(format_combinations) {
  ParserFields fields;
  PluginPtr plugin = create(fields);
  if (!plugin) return;
  IPluginV3OneBuild* b = build(plugin.get());
  Problem p;
  // Asks for position `pos` with every earlier position already chosen.
  auto supports = [&](int32_t nb_inputs, std::vector<PluginTensorDesc> io, int32_t pos) {
    std::vector<DynamicPluginTensorDesc> descs;
    for (const PluginTensorDesc& d : io) descs.push_back(dynamic(d));
    return b->supportsFormatCombination(pos, descs.data(), nb_inputs, 1);
  };
  for (DataType data : {DataType::kFLOAT, DataType::kHALF}) {
    for (DataType offset : {DataType::kFLOAT, DataType::kHALF}) {
      std::vector<PluginTensorDesc> io = inputs_of(p, true, true, data, offset);
      io.push_back(desc(p.y, data));
      for (int32_t pos = 0; pos < 6; ++pos) CHECK(supports(5, io, pos));
      const DataType other_data = data == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
      const DataType other_offset = offset == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
      for (int32_t pos : {1, 3, 5}) {  // W, B, Y follow X
        std::vector<PluginTensorDesc> changed = io;
        changed[static_cast<size_t>(pos)].type = other_data;
        CHECK(!supports(5, changed, pos));
      }
      std::vector<PluginTensorDesc> changed = io;
      changed[4].type = other_offset;  // mask follows offset
      CHECK(!supports(5, changed, 4));
    }
  }
  // 4 inputs: rank decides whether the 4th follows X (B) or offset (mask).
  std::vector<PluginTensorDesc> with_bias = inputs_of(p, true, false, DataType::kHALF, DataType::kFLOAT);
  with_bias.push_back(desc(p.y, DataType::kHALF));
  CHECK(supports(4, with_bias, 3));
  with_bias[3].type = DataType::kFLOAT;
  CHECK(!supports(4, with_bias, 3));
  std::vector<PluginTensorDesc> with_mask = inputs_of(p, false, true, DataType::kHALF, DataType::kFLOAT);
  with_mask.push_back(desc(p.y, DataType::kHALF));
  CHECK(supports(4, with_mask, 3));
  with_mask[3].type = DataType::kHALF;
  CHECK(!supports(4, with_mask, 3));
  // Other types and formats.
  std::vector<PluginTensorDesc> io = inputs_of(p, false, false);
  io.push_back(desc(p.y));
  std::vector<PluginTensorDesc> changed = io;
  changed[0].type = DataType::kBF16;
  CHECK(!supports(3, changed, 0));
  changed = io;
  changed[2].type = DataType::kINT8;
  CHECK(!supports(3, changed, 2));
  changed = io;
  changed[0].format = TensorFormat::kHWC8;  // float32: kLINEAR only
  CHECK(!supports(3, changed, 0));
  CHECK(!supports(3, io, 4));
  CHECK(!supports(2, io, 0));
  // float16: X and Y in kHWC8 (NHWC, C padded to 8), the others kLINEAR.
  std::vector<PluginTensorDesc> hwc8 = inputs_of(p, false, false, DataType::kHALF, DataType::kHALF);
  hwc8.push_back(desc(p.y, DataType::kHALF, TensorFormat::kHWC8));
  hwc8[0].format = TensorFormat::kHWC8;
  // X: 12 taps, 3 output channels per group: 88 KiB of shared memory (never ahead of time).
  const bool hwc8_offered = channels_last_offered(88 * 1024);
  CHECK_EQ(supports(3, hwc8, 0), hwc8_offered);
  for (int32_t pos = 1; pos < 4; ++pos) CHECK(supports(3, hwc8, pos));  // given X in kHWC8
  for (int32_t pos : {1, 2}) {
    changed = hwc8;
    changed[static_cast<size_t>(pos)].format = TensorFormat::kHWC8;
    CHECK(!supports(3, changed, pos));
  }
  changed = hwc8;
  changed[3].format = TensorFormat::kLINEAR;  // Y follows X's format
  CHECK(!supports(3, changed, 3));
  changed = hwc8;
  changed[0].format = TensorFormat::kHWC16;
  changed[3].format = TensorFormat::kHWC16;
  CHECK_EQ(supports(3, changed, 0), hwc8_offered);
  CHECK(supports(3, changed, 3));
  for (TensorFormat other : {TensorFormat::kCHW32, TensorFormat::kCHW2, TensorFormat::kDHWC8, TensorFormat::kCHW4}) {
    changed = hwc8;
    changed[0].format = other;
    CHECK(!supports(3, changed, 0));
  }
}

// Float channels-last X runs only on the tensor-core kernel: a node whose corner
// table (offset_group*kh*kw taps) cannot fit its shared memory stays kLINEAR.
TEST(channels_last_only_where_the_tensor_core_kernel_fits) {
  ParserFields fields;
  fields.ints["offset_group"] = {16};  // 16*3*2 = 96 taps: a corner table of 384 KiB
  fields.ints["group"] = {1};
  PluginPtr plugin = create(fields);
  if (!plugin) return;
  IPluginV3OneBuild* b = build(plugin.get());
  Problem p;
  p.x = {2, 16, 9, 7};
  p.w = {6, 16, 3, 2};
  p.offset = {2, 192, 5, 6};
  std::vector<PluginTensorDesc> io = inputs_of(p, false, false, DataType::kHALF, DataType::kHALF);
  io.push_back(desc(p.y, DataType::kHALF));
  std::vector<DynamicPluginTensorDesc> descs;
  for (const PluginTensorDesc& d : io) descs.push_back(dynamic(d));
  CHECK(b->supportsFormatCombination(0, descs.data(), 3, 1));  // kLINEAR
  descs[0].desc.format = TensorFormat::kHWC8;
  CHECK(!b->supportsFormatCombination(0, descs.data(), 3, 1));
  // 6 taps, 6 output channels: 66 KiB. Offered on a device that allows it (gpu_check.sh's ctest);
  // ahead of time refused, as sm_75 allows 64 KiB.
  fields.ints["offset_group"] = {1};
  PluginPtr small = create(fields);
  CHECK(small != nullptr);
  if (!small) return;
  IPluginV3OneBuild* small_build = build(small.get());
  CHECK_EQ(small_build->supportsFormatCombination(0, descs.data(), 3, 1), channels_last_offered(66 * 1024));
  descs[0].desc.format = TensorFormat::kLINEAR;
  CHECK(small_build->supportsFormatCombination(0, descs.data(), 3, 1));
}

TEST(configure_and_shape_change_validate_shapes) {
  ParserFields fields;
  PluginPtr plugin = create(fields);
  if (!plugin) return;
  IPluginV3OneBuild* b = build(plugin.get());
  IPluginV3OneRuntime* r = runtime(plugin.get());
  Problem p;
  logger().take();
  auto configure = [&](const std::vector<PluginTensorDesc>& in, const PluginTensorDesc& out) {
    std::vector<DynamicPluginTensorDesc> dyn_in;
    for (const PluginTensorDesc& d : in) dyn_in.push_back(dynamic(d));
    DynamicPluginTensorDesc dyn_out = dynamic(out);
    return b->configurePlugin(dyn_in.data(), static_cast<int32_t>(dyn_in.size()), &dyn_out, 1);
  };
  const PluginTensorDesc y = desc(p.y);
  for (int variant = 0; variant < 4; ++variant) {
    const std::vector<PluginTensorDesc> in = inputs_of(p, variant & 1, variant & 2);
    CHECK_EQ(configure(in, y), 0);
    CHECK_EQ(r->onShapeChange(in.data(), static_cast<int32_t>(in.size()), &y, 1), 0);
  }
  CHECK_EQ(logger().take(), std::string());

  // X and Y in kHWC8 (float16), Y's format following X's.
  {
    std::vector<PluginTensorDesc> in = inputs_of(p, false, false, DataType::kHALF, DataType::kHALF);
    in[0].format = TensorFormat::kHWC8;
    CHECK_EQ(configure(in, desc(p.y, DataType::kHALF, TensorFormat::kHWC8)), 0);
    CHECK(configure(in, desc(p.y, DataType::kHALF)) != 0);
    CHECK_CONTAINS(logger().take(), "output Y has format kLINEAR, expected that of input X (kHWC8)");
    in[0].type = DataType::kFLOAT;
    in[1].type = DataType::kFLOAT;
    CHECK(configure(in, desc(p.y, DataType::kFLOAT, TensorFormat::kHWC8)) != 0);
    CHECK_CONTAINS(logger().take(), "input X has format kHWC8 with type float32, expected kLINEAR, kHWC8 or kHWC16 (float16)");
  }

  // Runtime dimensions (-1) are checked later, in onShapeChange.
  Problem dynamic_problem;
  dynamic_problem.x = {-1, 4, -1, -1};
  dynamic_problem.offset = {-1, 24, -1, -1};
  dynamic_problem.y = {-1, 6, -1, -1};
  CHECK_EQ(configure(inputs_of(dynamic_problem, false, false), desc(dynamic_problem.y)), 0);
  // ... but the known ones are checked at once.
  Problem dynamic_wrong = dynamic_problem;
  dynamic_wrong.offset = {-1, 12, -1, -1};
  CHECK(configure(inputs_of(dynamic_wrong, false, false), desc(dynamic_wrong.y)) != 0);
  CHECK_CONTAINS(logger().take(), "offset has 12 channels, expected 2*offset_group*kh*kw = 24");
  // And the optimization profile's min and max shapes as whole problems.
  {
    std::vector<DynamicPluginTensorDesc> dyn_in;
    for (const PluginTensorDesc& d : inputs_of(dynamic_problem, false, false)) dyn_in.push_back(dynamic(d));
    DynamicPluginTensorDesc dyn_out = dynamic(desc(dynamic_problem.y));
    const std::vector<std::vector<int64_t>> min_dims = {{1, 4, 9, 7}, p.w, {1, 24, 5, 6}};
    std::vector<std::vector<int64_t>> max_dims = {{2, 4, 9, 7}, p.w, {2, 24, 5, 6}};
    for (size_t i = 0; i < dyn_in.size(); ++i) {
      dyn_in[i].min = desc(min_dims[i]).dims;
      dyn_in[i].max = desc(max_dims[i]).dims;
    }
    CHECK_EQ(b->configurePlugin(dyn_in.data(), 3, &dyn_out, 1), 0);
    CHECK_EQ(logger().take(), std::string());
    dyn_in[0].min = desc({1, 4, 9, 1}).dims;  // W = 1 at the profile's min: Wo would be 0.
    dyn_in[2].min = desc({1, 24, 5, 0}).dims;
    CHECK(b->configurePlugin(dyn_in.data(), 3, &dyn_out, 1) != 0);
    const std::string log = logger().take();
    CHECK_CONTAINS(log, "output would be empty");
    CHECK_CONTAINS(log, "(at the optimization profile's min shapes)");
  }

  Problem wrong = p;
  wrong.offset[1] = 18;
  const std::vector<PluginTensorDesc> bad = inputs_of(wrong, true, true);
  CHECK(configure(bad, desc(p.y)) != 0);
  std::string log = logger().take();
  CHECK_CONTAINS(log, std::string("DcnDeformConv node '") + kNode + "'");
  CHECK_CONTAINS(log, "offset has 18 channels, expected 2*offset_group*kh*kw = 24");
  CHECK(r->onShapeChange(bad.data(), 5, &y, 1) != 0);
  CHECK_CONTAINS(logger().take(), "offset has 18 channels");

  Problem wrong_bias = p;
  wrong_bias.bias = {5};
  const std::vector<PluginTensorDesc> bad_bias = inputs_of(wrong_bias, true, false);
  CHECK(r->onShapeChange(bad_bias.data(), 4, &y, 1) != 0);
  CHECK_CONTAINS(logger().take(), "bias B has 5 elements, expected M = 6");

  const std::vector<PluginTensorDesc> good = inputs_of(p, false, false);
  const PluginTensorDesc wrong_y = desc({2, 6, 5, 5});
  CHECK(r->onShapeChange(good.data(), 3, &wrong_y, 1) != 0);
  CHECK_CONTAINS(logger().take(), "output Y has shape [2, 6, 5, 5], expected [2, 6, 5, 6]");

  const std::vector<PluginTensorDesc> mixed = inputs_of(p, true, false, DataType::kFLOAT, DataType::kFLOAT);
  std::vector<PluginTensorDesc> mixed_types = mixed;
  mixed_types[3].type = DataType::kHALF;
  CHECK(r->onShapeChange(mixed_types.data(), 4, &y, 1) != 0);
  CHECK_CONTAINS(logger().take(), "bias B has type float16, expected float32 (the type of X)");
}

TEST(enqueue_errors_are_reported) {
  ParserFields fields;
  PluginPtr plugin = create(fields);
  if (!plugin) return;
  FakeErrorRecorder recorder;
  FakeResourceContext context(&recorder);
  PluginPtr attached(runtime(plugin.get())->attachToContext(&context));
  CHECK(attached != nullptr);
  if (!attached) return;
  IPluginV3OneRuntime* r = runtime(attached.get());
  Problem p;
  const std::vector<PluginTensorDesc> in = inputs_of(p, true, true);
  const PluginTensorDesc y = desc(p.y);
  const void* inputs[5] = {};
  void* outputs[1] = {};
  logger().take();

  CHECK(r->enqueue(in.data(), &y, inputs, outputs, nullptr, nullptr) != 0);
  CHECK_CONTAINS(logger().take(), "enqueue called before onShapeChange");
  CHECK_EQ(recorder.getNbErrors(), 1);
  if (recorder.getNbErrors() > 0) CHECK(recorder.getErrorCode(0) == nvinfer1::ErrorCode::kINVALID_STATE);

  CHECK_EQ(r->onShapeChange(in.data(), 5, &y, 1), 0);
  CHECK(r->enqueue(in.data(), &y, inputs, outputs, nullptr, nullptr) != 0);  // null buffers
  const std::string log = logger().take();
  CHECK_CONTAINS(log, std::string("DcnDeformConv node '") + kNode + "': the CUDA kernel rejected the problem: ");
  CHECK_CONTAINS(log, "NULL buffer for: X W offset");
  CHECK_EQ(recorder.getNbErrors(), 2);
  if (recorder.getNbErrors() > 1) {
    CHECK(std::strlen(recorder.getErrorDesc(1)) <= nvinfer1::IErrorRecorder::kMAX_DESC_LENGTH);
  }

  // Clones keep the attributes.
  PluginPtr copy(attached->clone());
  CHECK(copy != nullptr);
  if (copy) {
    CHECK_EQ(std::string(build(copy.get())->getMetadataString()), std::string(build(plugin.get())->getMetadataString()));
  }
  std::vector<DynamicPluginTensorDesc> dyn;
  for (const PluginTensorDesc& d : in) dyn.push_back(dynamic(d));
  DynamicPluginTensorDesc dyn_y = dynamic(y);
  CHECK_EQ(build(plugin.get())->getWorkspaceSize(dyn.data(), 5, &dyn_y, 1), size_t{0});
}

// FP32, 4 inputs (B dropped by the parser, mask kept), on the GPU when there is one.
TEST(enqueue_matches_cpu_reference_on_gpu) {
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
    cudaGetLastError();
    std::printf("[ SKIP ] enqueue_matches_cpu_reference_on_gpu: no CUDA device\n");
    return;
  }
  ParserFields fields;
  PluginPtr plugin = create(fields);
  if (!plugin) return;
  Problem p;
  const std::vector<PluginTensorDesc> in = inputs_of(p, false, true);
  const PluginTensorDesc y = desc(p.y);
  IPluginV3OneRuntime* r = runtime(plugin.get());
  CHECK_EQ(r->onShapeChange(in.data(), 4, &y, 1), 0);

  auto count = [](const std::vector<int64_t>& dims) {
    size_t n = 1;
    for (int64_t d : dims) n *= static_cast<size_t>(d);
    return n;
  };
  std::vector<std::vector<float>> host = {std::vector<float>(count(p.x)), std::vector<float>(count(p.w)),
                                          std::vector<float>(count(p.offset)), std::vector<float>(count(p.mask))};
  uint32_t state = 12345;
  auto next = [&state]() {
    state = state * 1664525U + 1013904223U;
    return static_cast<float>(state >> 8) / static_cast<float>(1U << 24);  // [0, 1)
  };
  for (float& v : host[0]) v = next() * 2.0F - 1.0F;
  for (float& v : host[1]) v = next() - 0.5F;
  for (float& v : host[2]) v = (next() - 0.5F) * 6.0F;  // offsets of a few pixels, some out of bounds
  for (float& v : host[3]) v = next();

  std::vector<void*> device(4, nullptr);
  void* device_y = nullptr;
  bool ok = true;
  for (size_t i = 0; i < 4; ++i) {
    ok = ok && cudaMalloc(&device[i], host[i].size() * sizeof(float)) == cudaSuccess;
    ok = ok && cudaMemcpy(device[i], host[i].data(), host[i].size() * sizeof(float), cudaMemcpyHostToDevice) ==
                   cudaSuccess;
  }
  ok = ok && cudaMalloc(&device_y, count(p.y) * sizeof(float)) == cudaSuccess;
  CHECK(ok);
  std::vector<float> result(count(p.y), 0.0F);
  if (ok) {
    const void* inputs[4] = {device[0], device[1], device[2], device[3]};
    void* outputs[1] = {device_y};
    CHECK_EQ(r->enqueue(in.data(), &y, inputs, outputs, nullptr, nullptr), 0);
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    CHECK(cudaMemcpy(result.data(), device_y, result.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  }
  for (void* pointer : device) cudaFree(pointer);
  cudaFree(device_y);
  CHECK_EQ(logger().take(), std::string());

  dcn_deploy::DeformConvAttributes attributes;
  CHECK_EQ(dcn_deploy::make_attributes(kNode, {3, 2}, {2, 1}, {1, 0, 2, 1}, {1, 2}, 2, 2, &attributes),
           std::string());
  dcn_deploy::DeformConvInputDims dims;
  dims.input = p.x;
  dims.weight = p.w;
  dims.offset = p.offset;
  dims.mask = p.mask;
  dcn_deploy::DeformConvShape shape;
  CHECK_EQ(dcn_deploy::infer_shape(kNode, attributes, dims, &shape), std::string());
  std::vector<float> expected(count(p.y), 0.0F);
  dcn_deploy::DeformConvTensors tensors;
  tensors.input = host[0].data();
  tensors.weight = host[1].data();
  tensors.offset = host[2].data();
  tensors.mask = host[3].data();
  tensors.output = expected.data();
  dcn_deploy::DeformConvCpu(attributes, shape, tensors).run_all();
  double max_error = 0.0;
  for (size_t i = 0; i < expected.size(); ++i) {
    max_error = std::fmax(max_error, std::fabs(static_cast<double>(result[i]) - expected[i]));
  }
  CHECK_NEAR(max_error, 0.0, 1e-4);
}

// ---------------------------------------------------------------------------
// INT8 forms: DcnDeformConvInt8 (float32 Y) and DcnDeformConvInt8Requantized (int8 Yq).

const char* kInt8 = "DcnDeformConvInt8";
const char* kInt8Requantized = "DcnDeformConvInt8Requantized";

// Parser fields of an INT8 node of Problem (M = 6): per-channel w_scale.
ParserFields int8_fields(bool requantized) {
  ParserFields fields;
  fields.floats["x_scale"] = {0.05F};
  fields.floats["w_scale"] = {0.001F, 0.002F, 0.003F, 0.004F, 0.005F, 0.006F};
  if (requantized) fields.floats["y_scale"] = {0.25F};
  return fields;
}

// Problem's tensors in an INT8 mode: int8 X and W, float32 offset, B, mask.
std::vector<PluginTensorDesc> int8_inputs(const Problem& p, bool with_bias, bool with_mask) {
  std::vector<PluginTensorDesc> inputs = inputs_of(p, with_bias, with_mask);
  inputs[0].type = DataType::kINT8;
  inputs[1].type = DataType::kINT8;
  return inputs;
}

TEST(int8_creators_list_the_scale_fields) {
  const char* names[] = {kInt8, kInt8Requantized};
  for (int requantized = 0; requantized < 2; ++requantized) {
    IPluginCreatorV3One* plugin_creator = creator(names[requantized]);
    CHECK(plugin_creator != nullptr);
    if (plugin_creator == nullptr) continue;
    CHECK_EQ(std::string(plugin_creator->getPluginVersion()), std::string("1"));
    CHECK_EQ(std::string(plugin_creator->getPluginNamespace()), std::string("dcn_deploy"));
    const PluginFieldCollection* fields = plugin_creator->getFieldNames();
    CHECK(fields != nullptr);
    if (fields == nullptr) continue;
    CHECK_EQ(fields->nbFields, 8 + requantized);
    std::string listed;
    for (int32_t i = 6; i < fields->nbFields; ++i) {
      listed += std::string(fields->fields[i].name) + " ";
      CHECK(fields->fields[i].type == PluginFieldType::kFLOAT32);
    }
    CHECK_EQ(listed, std::string(requantized ? "x_scale w_scale y_scale " : "x_scale w_scale "));
  }
}

TEST(int8_create_types_and_formats) {
  logger().take();
  for (int requantized = 0; requantized < 2; ++requantized) {
    const char* name = requantized ? kInt8Requantized : kInt8;
    ParserFields fields = int8_fields(requantized);
    PluginPtr plugin = create(fields, kNode, nvinfer1::TensorRTPhase::kBUILD, name);
    CHECK(plugin != nullptr);
    if (!plugin) continue;
    CHECK_EQ(std::string(core(plugin.get())->getPluginName()), std::string(name));
    IPluginV3OneBuild* b = build(plugin.get());
    const DataType y_type = requantized ? DataType::kINT8 : DataType::kFLOAT;

    DataType out = DataType::kHALF;
    const DataType int8_inputs_types[] = {DataType::kINT8, DataType::kINT8, DataType::kFLOAT, DataType::kFLOAT};
    CHECK_EQ(b->getOutputDataTypes(&out, 1, int8_inputs_types, 4), 0);
    CHECK(out == y_type);
    const DataType float_inputs[] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT};
    CHECK(b->getOutputDataTypes(&out, 1, float_inputs, 3) != 0);
    CHECK_CONTAINS(logger().take(), std::string("input X has type float32, expected int8 (") + name + ")");

    Problem p;
    auto supports = [&](std::vector<PluginTensorDesc> io, int32_t pos) {
      std::vector<DynamicPluginTensorDesc> descs;
      for (const PluginTensorDesc& d : io) descs.push_back(dynamic(d));
      return b->supportsFormatCombination(pos, descs.data(), static_cast<int32_t>(io.size()) - 1, 1);
    };
    std::vector<PluginTensorDesc> io = int8_inputs(p, true, true);
    io.push_back(desc(p.y, y_type));
    for (int32_t pos = 0; pos < 6; ++pos) CHECK(supports(io, pos));
    const DataType wrong[] = {DataType::kFLOAT, DataType::kHALF, DataType::kINT8, DataType::kINT8, DataType::kINT8,
                              requantized ? DataType::kFLOAT : DataType::kINT8};
    for (int32_t pos = 0; pos < 6; ++pos) {
      std::vector<PluginTensorDesc> changed = io;
      changed[static_cast<size_t>(pos)].type = wrong[pos];
      CHECK(!supports(changed, pos));
    }
    // X and Y in TensorRT's int8 convolution formats; the float32 Y only in kCHW32 or kLINEAR, so
    // with it X is refused up front in the formats no Y could follow.
    for (TensorFormat format : {TensorFormat::kCHW32, TensorFormat::kCHW4, TensorFormat::kHWC16}) {
      std::vector<PluginTensorDesc> changed = io;
      changed[0].format = format;
      changed[5].format = format;
      CHECK(supports(changed, 0) == (requantized || format == TensorFormat::kCHW32));
      CHECK(supports(changed, 5) == (requantized || format == TensorFormat::kCHW32));
      changed[5].format = TensorFormat::kLINEAR;
      CHECK(!supports(changed, 5));
      changed[5].format = format;
      changed[1].format = format;  // W stays kLINEAR
      CHECK(!supports(changed, 1));
    }
    std::vector<PluginTensorDesc> changed = io;
    changed[0].format = TensorFormat::kHWC8;  // a float16-only format
    CHECK(!supports(changed, 0));

    // configure / onShapeChange: types, shapes and the length of w_scale against M.
    IPluginV3OneRuntime* r = runtime(plugin.get());
    const std::vector<PluginTensorDesc> in = int8_inputs(p, true, true);
    const PluginTensorDesc y = desc(p.y, y_type);
    CHECK_EQ(r->onShapeChange(in.data(), 5, &y, 1), 0);
    const PluginTensorDesc wrong_y = desc(p.y, requantized ? DataType::kFLOAT : DataType::kHALF);
    CHECK(r->onShapeChange(in.data(), 5, &wrong_y, 1) != 0);
    CHECK_CONTAINS(logger().take(), std::string("output Y has type ") + (requantized ? "float32" : "float16") +
                                        ", expected " + (requantized ? "int8" : "float32") + " (" + name + ")");
    std::vector<PluginTensorDesc> half_offset = in;
    half_offset[2].type = DataType::kHALF;
    CHECK(r->onShapeChange(half_offset.data(), 5, &y, 1) != 0);
    CHECK_CONTAINS(logger().take(), "offset has type float16, expected float32");
    Problem more_channels = p;
    more_channels.w[0] = 8;
    more_channels.bias = {8};
    more_channels.y[1] = 8;
    const std::vector<PluginTensorDesc> in8 = int8_inputs(more_channels, true, true);
    const PluginTensorDesc y8 = desc(more_channels.y, y_type);
    CHECK(r->onShapeChange(in8.data(), 5, &y8, 1) != 0);
    CHECK_CONTAINS(logger().take(), "attribute 'w_scale' has 6 values, expected one per output channel (M = 8) or 1");
    std::vector<DynamicPluginTensorDesc> dyn;
    for (const PluginTensorDesc& d : in) dyn.push_back(dynamic(d));
    DynamicPluginTensorDesc dyn_y = dynamic(y);
    CHECK_EQ(b->getWorkspaceSize(dyn.data(), 5, &dyn_y, 1), size_t{0});
  }
  CHECK_EQ(logger().take(), std::string());
}

TEST(int8_serialised_scales_round_trip) {
  for (int requantized = 0; requantized < 2; ++requantized) {
    const char* name = requantized ? kInt8Requantized : kInt8;
    ParserFields fields = int8_fields(requantized);
    PluginPtr plugin = create(fields, kNode, nvinfer1::TensorRTPhase::kBUILD, name);
    if (!plugin) continue;
    const PluginFieldCollection* serialized = runtime(plugin.get())->getFieldsToSerialize();
    CHECK(serialized != nullptr);
    if (!serialized) continue;
    CHECK_EQ(serialized->nbFields, 8 + requantized);
    PluginPtr restored(creator(name)->createPlugin(kNode, serialized, nvinfer1::TensorRTPhase::kRUNTIME));
    CHECK(restored != nullptr);
    if (!restored) continue;
    const PluginFieldCollection* again = runtime(restored.get())->getFieldsToSerialize();
    CHECK_EQ(again->nbFields, serialized->nbFields);
    for (int32_t i = 6; i < again->nbFields; ++i) {
      const PluginField& field = again->fields[i];
      const std::vector<float>& expected = fields.floats[field.name];
      CHECK(field.type == PluginFieldType::kFLOAT32);
      CHECK_EQ(static_cast<size_t>(field.length), expected.size());
      CHECK(std::memcmp(field.data, expected.data(), expected.size() * sizeof(float)) == 0);  // exact bits
    }
    // Only the matching creator accepts the fields.
    if (requantized) {
      CHECK(creator(kInt8)->createPlugin(kNode, serialized, nvinfer1::TensorRTPhase::kRUNTIME) == nullptr);
      CHECK_CONTAINS(logger().take(), "plugin field 'y_scale' is for DcnDeformConvInt8Requantized only");
    }
  }
  // A single w_scale stands for every channel.
  ParserFields single = int8_fields(false);
  single.floats["w_scale"] = {0.01F};
  PluginPtr plugin = create(single, kNode, nvinfer1::TensorRTPhase::kBUILD, kInt8);
  CHECK(plugin != nullptr);
  if (plugin) {
    Problem p;
    const std::vector<PluginTensorDesc> in = int8_inputs(p, false, false);
    const PluginTensorDesc y = desc(p.y);
    CHECK_EQ(runtime(plugin.get())->onShapeChange(in.data(), 3, &y, 1), 0);
  }
}

TEST(int8_bad_scales_are_logged_and_return_null) {
  logger().take();
  struct BadCase {
    const char* plugin;
    std::function<void(ParserFields&)> edit;
    const char* expected;
  };
  const std::vector<BadCase> cases = {
      {kInt8, [](ParserFields& f) { f.floats["x_scale"] = {0.0F}; }, "x_scale"},
      {kInt8, [](ParserFields& f) { f.floats["w_scale"][3] = std::nanf(""); }, "w_scale[3]"},
      {kInt8, [](ParserFields& f) { f.floats["w_scale"][0] = -1.0F; }, "w_scale[0]"},
      {kInt8, [](ParserFields& f) { f.floats.erase("x_scale"); }, "plugin field 'x_scale' is missing"},
      {kInt8, [](ParserFields& f) { f.floats.erase("w_scale"); }, "plugin field 'w_scale' is missing"},
      {kInt8, [](ParserFields& f) { f.floats["w_scale"].clear(); }, "plugin field 'w_scale' has 0 values"},
      {kInt8, [](ParserFields& f) { f.floats["x_scale"] = {0.1F, 0.2F}; }, "plugin field 'x_scale' has 2 values, expected 1"},
      {kInt8Requantized, [](ParserFields& f) { f.floats.erase("y_scale"); }, "plugin field 'y_scale' is missing"},
      {kInt8Requantized, [](ParserFields& f) { f.floats["y_scale"] = {0.0F}; }, "y_scale"},
      {kInt8Requantized, [](ParserFields& f) { f.floats["y_scale"] = {INFINITY}; }, "y_scale"},
      {kInt8, [](ParserFields& f) { f.ints.erase("pads"); }, "plugin field 'pads' is missing"},
  };
  for (const BadCase& bad : cases) {
    ParserFields fields = int8_fields(std::string(bad.plugin) == kInt8Requantized);
    bad.edit(fields);
    CHECK(create(fields, kNode, nvinfer1::TensorRTPhase::kBUILD, bad.plugin) == nullptr);
    const std::string log = logger().take();
    CHECK_CONTAINS(log, std::string("node '") + kNode + "'");
    CHECK_CONTAINS(log, bad.expected);
  }
  // x_scale as an int (a parser handing over an INT attribute).
  ParserFields fields = int8_fields(false);
  fields.floats.erase("x_scale");
  fields.ints["x_scale"] = {1};
  CHECK(create(fields, kNode, nvinfer1::TensorRTPhase::kBUILD, kInt8) == nullptr);
  CHECK_CONTAINS(logger().take(), "plugin field 'x_scale' has type kINT32, expected kFLOAT32");
}

// Without a device the first enqueue cannot upload the output scales: reported, not crashed on.
TEST(int8_enqueue_without_a_device_is_reported) {
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) == cudaSuccess && device_count > 0) {
    std::printf("[ SKIP ] int8_enqueue_without_a_device_is_reported: a CUDA device is present\n");
    return;
  }
  cudaGetLastError();
  ParserFields fields = int8_fields(true);
  PluginPtr plugin = create(fields, kNode, nvinfer1::TensorRTPhase::kBUILD, kInt8Requantized);
  if (!plugin) return;
  IPluginV3OneRuntime* r = runtime(plugin.get());
  Problem p;
  const std::vector<PluginTensorDesc> in = int8_inputs(p, true, true);
  const PluginTensorDesc y = desc(p.y, DataType::kINT8);
  CHECK_EQ(r->onShapeChange(in.data(), 5, &y, 1), 0);
  const void* inputs[5] = {};
  void* outputs[1] = {};
  logger().take();
  CHECK(r->enqueue(in.data(), &y, inputs, outputs, nullptr, nullptr) != 0);
  CHECK_CONTAINS(logger().take(), "could not upload the INT8 output scales: cuda");
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <path to libdcn_deploy_trt.so>\n", argv[0]);
    return 2;
  }
  library_path() = argv[1];
  return test_harness::run_all_tests();
}
