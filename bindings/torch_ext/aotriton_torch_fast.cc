// _aotriton_torch: the eager flash_attn_func forward in C++ on at::Tensor.
//
// Optional (it links libtorch, so it matches one torch build; pyaotriton stays
// free of libtorch). From Python, the plain inference forward through
// pyaotriton pays for a torch allocation (~4 us) and for building the tensor
// tuples; here the output comes from the caching allocator in C++ and the
// views from the tensors' own sizes and strides. It serves only the call the
// Python fast path serves (batched, no dropout/features/grad, plain tensors,
// no dispatch mode) and returns NotImplemented for anything else, so the
// Python layer stays the one place that names errors.
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

#include "aotriton/flash.h"

namespace {

using aotriton::DType;

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
void* discard_buffer(const c10::Device& device, int64_t numel) {
  static std::mutex mutex;
  static std::vector<at::Tensor> largest;  // by device index
  static std::vector<at::Tensor> kept;
  std::lock_guard<std::mutex> lock(mutex);
  const size_t index = device.index();
  if (largest.size() <= index) largest.resize(index + 1);
  at::Tensor& have = largest[index];
  if (have.defined() && have.numel() >= numel) return have.data_ptr();
  const int64_t size = std::max<int64_t>(numel, have.defined() ? 2 * have.numel() : int64_t{1} << 16);
  if (have.defined()) kept.push_back(have);
  have = at::empty({size}, at::TensorOptions().dtype(at::kFloat).device(device));
  return have.data_ptr();
}

bool plain_tensor(PyObject* o) { return THPVariable_CheckExact(o); }

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
    at::Tensor out = at::empty_like(q);
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
    const c10::Stream stream = c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(device);
    const aotriton::Status s = aotriton::flash::attn_fwd(p, aotriton::Stream{stream.native_handle()});
    if (s != aotriton::Status::kSuccess) {
      const bool bad_input = s == aotriton::Status::kInvalidArgument || s == aotriton::Status::kUnsupported;
      PyErr_SetString(bad_input ? PyExc_ValueError : PyExc_RuntimeError, aotriton::error_string(s));
      return nullptr;
    }
    return THPVariable_Wrap(std::move(out));
  } catch (const std::exception& e) {  // torch errors (e.g. out of memory) become RuntimeError
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

PyMethodDef methods[] = {
    {"attn_fwd_plain", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(attn_fwd_plain)), METH_FASTCALL,
     "attn_fwd_plain(q, k, v, softmax_scale, causal) -> out, or NotImplemented when the call needs the Python path"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_aotriton_torch",
                          "aotriton's eager flash forward on at::Tensor (optional; built for one torch version)", -1,
                          methods};

}  // namespace

PyMODINIT_FUNC PyInit__aotriton_torch() { return PyModule_Create(&module_def); }
