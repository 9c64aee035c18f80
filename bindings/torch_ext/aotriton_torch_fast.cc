// _aotriton_torch: the eager flash_attn_func forward and silu/gelu_and_mul in
// C++ on at::Tensor.
//
// Optional (it links libtorch, so it matches one torch build; pyaotriton stays
// free of libtorch). From Python, the plain inference forward through
// pyaotriton pays for a torch allocation (~4 us) and for building the tensor
// tuples; here the output comes from the caching allocator in C++ and the
// views from the tensors' own sizes and strides. It serves only the call the
// Python fast path serves (batched, no dropout/features/grad, plain tensors,
// no dispatch mode; act_and_mul likewise) and returns NotImplemented for
// anything else, so the
// Python layer stays the one place that names errors.
//
// It calls the C++ API through pyaotriton's capsule (runtime_api.h), not a
// linked copy of libaotriton: one runtime per process.
#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/csrc/autograd/python_variable.h>

#include <mutex>
#include <optional>
#include <vector>

#include "runtime_api.h"

namespace {

using aotriton::DType;

const pyaotriton::RuntimeApi* api = nullptr;  // set once at import

std::optional<DType> dtype_of(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Half: return DType::kFloat16;
    case c10::ScalarType::BFloat16: return DType::kBFloat16;
    case c10::ScalarType::Float: return DType::kFloat32;
    default: return std::nullopt;
  }
}

template <int R>
aotriton::TensorView<R> view_of(const at::Tensor& t, DType dtype) {
  aotriton::TensorView<R> v;
  v.data = t.data_ptr();
  v.dtype = dtype;
  for (int i = 0; i < R; ++i) {
    v.sizes[i] = t.size(i);
    v.strides[i] = t.stride(i);
  }
  return v;
}

// A write-only fp32 buffer per device for the LSE nobody reads (as the Python
// layer's discard_buffer): buffers are never freed, since a CUDA graph may have
// captured a pointer that a freed block would hand to a live tensor.
std::mutex discard_mutex;
std::vector<at::Tensor> discard_largest;  // by device index: the buffer handed out now
std::vector<at::Tensor> discard_kept;     // the ones it replaced, kept alive

void* discard_buffer(const c10::Device& device, int64_t numel) {
  std::lock_guard<std::mutex> lock(discard_mutex);
  const size_t index = device.index();
  if (discard_largest.size() <= index) discard_largest.resize(index + 1);
  at::Tensor& have = discard_largest[index];
  if (have.defined() && have.numel() >= numel) return have.data_ptr();
  const int64_t size = std::max<int64_t>(numel, have.defined() ? 2 * have.numel() : int64_t{1} << 16);
  if (have.defined()) discard_kept.push_back(have);
  have = at::empty({size}, at::TensorOptions().dtype(at::kFloat).device(device));
  return have.data_ptr();
}

bool plain_tensor(PyObject* o) { return THPVariable_CheckExact(o); }

// The current stream of `device`. The default stream (handle 0) means "the
// context current in this thread", and a thread the CUDA runtime has not
// touched has none even under a DeviceGuard (it sets nothing when the index
// already matches): then the device's primary context is made current, as the
// Python path does (_glue.eager_stream).
aotriton::Status current_stream(const c10::Device& device, aotriton::Stream* out) {
  const c10::Stream s = c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(device);
  *out = aotriton::Stream{s.native_handle()};
  return out->handle ? aotriton::Status::kSuccess : api->ensure_current_device(device.index());
}

// A failed status as the Python layer raises it: ValueError for bad input, else RuntimeError.
PyObject* raise_status(aotriton::Status s) {
  const bool bad_input = s == aotriton::Status::kInvalidArgument || s == aotriton::Status::kUnsupported;
  PyErr_SetString(bad_input ? PyExc_ValueError : PyExc_RuntimeError, api->error_string(s));
  return nullptr;
}

// attn_fwd_plain(q, k, v, softmax_scale or None, causal code) -> out or NotImplemented.
PyObject* attn_fwd_plain(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError, "attn_fwd_plain(q, k, v, softmax_scale, causal) takes 5 arguments");
    return nullptr;
  }
  if (!plain_tensor(args[0]) || !plain_tensor(args[1]) || !plain_tensor(args[2]) ||
      c10::impl::TorchDispatchModeTLS::stack_len() > 0) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const at::Tensor& q = THPVariable_Unpack(args[0]);
  const at::Tensor& k = THPVariable_Unpack(args[1]);
  const at::Tensor& v = THPVariable_Unpack(args[2]);
  const c10::Device device = q.device();
  auto dtype = dtype_of(q.scalar_type());
  // The Python path checks and names everything else (devices, ranks, dtypes, grads).
  if (!device.is_cuda() || k.device() != device || v.device() != device || q.dim() != 4 || k.dim() != 4 ||
      v.dim() != 4 || !dtype || k.scalar_type() != q.scalar_type() || v.scalar_type() != q.scalar_type() ||
      v.size(3) != q.size(3) ||
      (c10::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad()))) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const int64_t B = q.size(0), Sq = q.size(1), Hq = q.size(2), D = q.size(3);
  double scale = D > 0 ? 1.0 / std::sqrt(static_cast<double>(D)) : 0.0;
  if (args[3] != Py_None) {
    scale = PyFloat_AsDouble(args[3]);
    if (scale == -1.0 && PyErr_Occurred()) return nullptr;
  }
  const long causal = PyLong_AsLong(args[4]);
  if (causal == -1 && PyErr_Occurred()) return nullptr;

  try {
    c10::DeviceGuard guard(device);  // the default stream means the current context: make it q's
    // empty_like keeps q's strides; for the common contiguous q, plain empty is the same and cheaper.
    at::Tensor out = q.is_contiguous() ? at::empty(q.sizes(), q.options()) : at::empty_like(q);
    aotriton::flash::FwdParams p;
    p.q = view_of<4>(q, *dtype);
    p.k = view_of<4>(k, *dtype);
    p.v = view_of<4>(v, *dtype);
    p.out = view_of<4>(out, *dtype);
    p.lse.data = discard_buffer(device, B * Hq * Sq);
    p.lse.dtype = DType::kFloat32;
    p.lse.sizes = {B, Hq, Sq};
    p.lse.strides = {Hq * Sq, Sq, 1};
    p.softmax_scale = static_cast<float>(scale);
    p.causal = static_cast<aotriton::flash::CausalType>(causal);
    aotriton::Stream stream;
    aotriton::Status s = current_stream(device, &stream);
    if (s == aotriton::Status::kSuccess) s = api->attn_fwd(p, stream, nullptr);
    if (s != aotriton::Status::kSuccess) return raise_status(s);
    return THPVariable_Wrap(std::move(out));
  } catch (const std::exception& e) {  // torch errors (e.g. out of memory) become RuntimeError
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

// act_and_mul_plain(x, out or None, activation code) -> out, or NotImplemented.
PyObject* act_and_mul_plain(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 3) {
    PyErr_SetString(PyExc_TypeError, "act_and_mul_plain(x, out, activation) takes 3 arguments");
    return nullptr;
  }
  const bool has_out = args[1] != Py_None;
  if (!plain_tensor(args[0]) || (has_out && !plain_tensor(args[1])) ||
      c10::impl::TorchDispatchModeTLS::stack_len() > 0) {
    Py_RETURN_NOTIMPLEMENTED;
  }
  const at::Tensor& x = THPVariable_Unpack(args[0]);
  const c10::Device device = x.device();
  const auto dtype = dtype_of(x.scalar_type());
  if (!device.is_cuda() || x.dim() != 2 || !dtype || x.requires_grad()) Py_RETURN_NOTIMPLEMENTED;
  std::optional<DType> out_dtype = dtype;
  if (has_out) {
    const at::Tensor& o = THPVariable_Unpack(args[1]);
    out_dtype = dtype_of(o.scalar_type());
    if (o.device() != device || o.dim() != 2 || !out_dtype) Py_RETURN_NOTIMPLEMENTED;
  }
  const long activation = PyLong_AsLong(args[2]);
  if (activation == -1 && PyErr_Occurred()) return nullptr;
  try {
    c10::DeviceGuard guard(device);
    at::Tensor out = has_out ? THPVariable_Unpack(args[1]) : at::empty({x.size(0), x.size(1) / 2}, x.options());
    aotriton::moe::ActAndMulParams p;
    p.out = view_of<2>(out, *out_dtype);
    p.input = view_of<2>(x, *dtype);
    p.activation = static_cast<aotriton::moe::Activation>(activation);
    aotriton::Stream stream;
    aotriton::Status s = current_stream(device, &stream);
    if (s == aotriton::Status::kSuccess) s = api->act_and_mul(p, stream, nullptr);
    if (s != aotriton::Status::kSuccess) return raise_status(s);
    return THPVariable_Wrap(std::move(out));
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

// discard_numel(device_index) -> elements of that device's LSE discard buffer (0: none yet); for tests.
PyObject* discard_numel(PyObject*, PyObject* index) {
  const long i = PyLong_AsLong(index);
  if (i == -1 && PyErr_Occurred()) return nullptr;
  std::lock_guard<std::mutex> lock(discard_mutex);
  const bool have = i >= 0 && static_cast<size_t>(i) < discard_largest.size() && discard_largest[i].defined();
  return PyLong_FromLongLong(have ? discard_largest[i].numel() : 0);
}

PyMethodDef methods[] = {
    {"discard_numel", discard_numel, METH_O, "discard_numel(device_index) -> size of the LSE discard buffer"},
    {"attn_fwd_plain", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(attn_fwd_plain)), METH_FASTCALL,
     "attn_fwd_plain(q, k, v, softmax_scale, causal) -> out, or NotImplemented when the call needs the Python path"},
    {"act_and_mul_plain", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(act_and_mul_plain)),
     METH_FASTCALL, "act_and_mul_plain(x, out or None, activation) -> out, or NotImplemented"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_aotriton_torch",
                          "aotriton's eager flash forward on at::Tensor (optional; built for one torch version)", -1,
                          methods};

}  // namespace

// Imports pyaotriton and takes its runtime's entry points; an ImportError when
// the two modules come from different builds.
PyMODINIT_FUNC PyInit__aotriton_torch() {
  api = static_cast<const pyaotriton::RuntimeApi*>(PyCapsule_Import(pyaotriton::kRuntimeApiCapsule, 0));
  if (api == nullptr) return nullptr;
  const pyaotriton::RuntimeApi& want = pyaotriton::kRuntimeApiShape;
  if (api->struct_size != want.struct_size || api->fwd_params_size != want.fwd_params_size ||
      api->act_and_mul_params_size != want.act_and_mul_params_size) {
    api = nullptr;
    PyErr_SetString(PyExc_ImportError, "_aotriton_torch and pyaotriton come from different aotriton builds");
    return nullptr;
  }
  return PyModule_Create(&module_def);
}
