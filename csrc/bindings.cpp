// fastmlp cpp backend: the one pybind11 bindings file (module fastmlp._C).
//
// Every function validates its arguments before touching memory and raises a Python
// exception (TypeError for a wrong dtype or a non-array, ValueError for shapes, sizes,
// contiguity, aliasing, labels out of range): dtype float32 or float64, the same for every
// float argument; C-contiguous; outputs writeable and overlapping no input. Arrays are taken
// with .noconvert(): nothing is ever cast or copied here (a cast copy of an array written in
// place would silently swallow the update), so the caller (fastmlp/backends/cpp_backend.py)
// passes contiguous arrays of the right dtype and allocates the outputs. The GIL is released
// around the kernels. Kernels: the headers beside this file, which know nothing of Python.
//
// Built three times by setup.py: fastmlp._C for any x86-64 (SSE2) and, where the compiler can,
// fastmlp._C_avx2 with -mavx2 -mfma (FASTMLP_MODULE=_C_avx2) and fastmlp._C_avx512 with
// AVX-512 F/DQ/BW/VL at 512-bit vectors; the backend imports the widest the CPU runs
// (cpu_supports below).
//
// Rebuild: `pip install -e .` from the repository root (see setup.py and docs/cpp.md).
#ifndef FASTMLP_MODULE
#define FASTMLP_MODULE _C
#endif

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "train_step.h"

namespace py = pybind11;
using namespace pybind11::literals;
using fastmlp::Act;
using fastmlp::i64;

namespace {

enum class DT { f32, f64 };

[[noreturn]] void fail_type(const std::string& msg) { throw py::type_error(msg); }
[[noreturn]] void fail_value(const std::string& msg) { throw py::value_error(msg); }

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

// One checked argument: an array, or None where `optional`.
struct Arg {
    const char* op;
    const char* name;
    py::object obj;
    bool present;
    py::array arr;

    Arg(const char* op_, const char* name_, const py::object& o, bool optional = false)
        : op(op_), name(name_), obj(o), present(!o.is_none()) {
        if (!present) {
            if (!optional) fail_type(std::string(op) + ": " + name + " must be an array, got None");
            return;
        }
        if (!py::isinstance<py::array>(o)) fail_type(std::string(op) + ": " + name + " must be a NumPy array");
        arr = py::reinterpret_borrow<py::array>(o);
        if (!(arr.flags() & py::array::c_style))
            fail_value(std::string(op) + ": " + name + " must be C-contiguous");
    }
    std::string where() const { return std::string(op) + ": " + name; }
    i64 size() const { return present ? i64(arr.size()) : 0; }
    i64 ndim() const { return i64(arr.ndim()); }
    i64 dim(int d) const { return i64(arr.shape(d)); }
    DT float_dtype() const {
        if (arr.dtype().is(py::dtype::of<float>())) return DT::f32;
        if (arr.dtype().is(py::dtype::of<double>())) return DT::f64;
        fail_type(where() + " must be float32 or float64, got " + std::string(py::str(arr.dtype())));
    }
    void expect(DT dt) const {
        if (present && float_dtype() != dt)
            fail_type(where() + " has dtype " + std::string(py::str(arr.dtype())) + ", expected " +
                      (dt == DT::f32 ? "float32" : "float64") + " like the first array");
    }
    void writeable() const {
        if (present && !arr.writeable()) fail_value(where() + " must be writeable (it is written in place)");
    }
    void same_shape(const Arg& o) const {
        if (!present || !o.present) return;
        bool same = arr.ndim() == o.arr.ndim();
        for (py::ssize_t d = 0; same && d < arr.ndim(); ++d) same = arr.shape(d) == o.arr.shape(d);
        if (!same) fail_value(where() + " has shape " + shape_str(arr) + ", expected " + shape_str(o.arr) + " like " + o.name);
    }
    void same_size(const Arg& o) const {
        if (present && o.present && arr.size() != o.arr.size())
            fail_value(where() + " has " + std::to_string(arr.size()) + " elements, expected " +
                       std::to_string(o.arr.size()) + " like " + o.name);
    }
    void shape2(i64 rows, i64 cols) const {
        if (!present) return;
        if (arr.ndim() != 2 || dim(0) != rows || dim(1) != cols)
            fail_value(where() + " has shape " + shape_str(arr) + ", expected (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + ")");
    }
    void shape1(i64 n) const {
        if (!present) return;
        if (arr.ndim() != 1 || dim(0) != n)
            fail_value(where() + " has shape " + shape_str(arr) + ", expected (" + std::to_string(n) + ",)");
    }
    const char* begin() const { return static_cast<const char*>(arr.data()); }
    const char* end() const { return begin() + arr.nbytes(); }
    template <class T> const T* in() const { return present ? static_cast<const T*>(arr.data()) : nullptr; }
    template <class T> T* out() { return present ? static_cast<T*>(arr.mutable_data()) : nullptr; }
};

// An output must share no byte with any other argument.
void no_overlap(const Arg& out, std::initializer_list<const Arg*> others) {
    if (!out.present || out.arr.nbytes() == 0) return;
    for (const Arg* o : others) {
        if (!o->present || o->arr.nbytes() == 0 || o == &out) continue;
        if (out.begin() < o->end() && o->begin() < out.end())
            fail_value(out.where() + " overlaps " + o->name + " in memory (outputs must not alias inputs)");
    }
}

void check_blas_dim(const char* op, i64 v) {
    if (v < 1) fail_value(std::string(op) + ": every dimension must be at least 1");
    if (v > 2147483647LL) fail_value(std::string(op) + ": a dimension exceeds the 32-bit BLAS limit");
}

Act act_code(const char* op, int code) {
    if (!fastmlp::valid_act(code)) fail_value(std::string(op) + ": unknown activation code " + std::to_string(code));
    return Act(code);
}

// Z (input) -> Y (output) elementwise; f(const T* Z, T* Y, n).
template <class F>
void unary(const char* op, const py::object& Zo, const py::object& Yo, F&& f) {
    Arg Z(op, "Z", Zo), Y(op, "Y", Yo);
    DT dt = Z.float_dtype();
    Y.expect(dt);
    Y.writeable();
    Y.same_shape(Z);
    no_overlap(Y, {&Z});
    const i64 n = Z.size();
    if (dt == DT::f32) {
        const float* z = Z.in<float>();
        float* y = Y.out<float>();
        py::gil_scoped_release nogil;
        f(z, y, n);
    } else {
        const double* z = Z.in<double>();
        double* y = Y.out<double>();
        py::gil_scoped_release nogil;
        f(z, y, n);
    }
}

// (dY, Z, Y) -> dZ elementwise; f(const T* dY, const T* Z, const T* Y, T* dZ, n) -> double.
template <class F>
double binary(const char* op, const py::object& dYo, const py::object& Zo, const py::object& Yo,
              const py::object& dZo, F&& f) {
    Arg dY(op, "dY", dYo), Z(op, "Z", Zo), Y(op, "Y", Yo), dZ(op, "dZ", dZo);
    DT dt = dY.float_dtype();
    Z.expect(dt);
    Y.expect(dt);
    dZ.expect(dt);
    dZ.writeable();
    Z.same_shape(dY);
    Y.same_shape(dY);
    dZ.same_shape(dY);
    no_overlap(dZ, {&dY, &Z, &Y});
    const i64 n = dY.size();
    if (dt == DT::f32) {
        const float *a = dY.in<float>(), *b = Z.in<float>(), *c = Y.in<float>();
        float* d = dZ.out<float>();
        py::gil_scoped_release nogil;
        return f(a, b, c, d, n);
    }
    const double *a = dY.in<double>(), *b = Z.in<double>(), *c = Y.in<double>();
    double* d = dZ.out<double>();
    py::gil_scoped_release nogil;
    return f(a, b, c, d, n);
}

// rows x C for the last-axis ops
std::pair<i64, i64> rows_cols(const Arg& a) {
    if (a.ndim() < 1) fail_value(a.where() + " must have at least one dimension");
    const i64 C = a.dim(int(a.ndim()) - 1);
    if (C < 1) fail_value(a.where() + " has an empty last axis");
    return {a.size() / C, C};
}

// ---------------------------------------------------------------------------- losses
// Elementwise losses: (output, target) -> sum of L; L (none) and G (grad) optional outputs.
template <class F>
double loss_same(const char* op, const py::object& Oo, const py::object& To, const py::object& Lo,
                 const py::object& Go, F&& f) {
    Arg O(op, "output", Oo), Tg(op, "target", To), L(op, "L", Lo, true), G(op, "G", Go, true);
    DT dt = O.float_dtype();
    Tg.expect(dt);
    L.expect(dt);
    G.expect(dt);
    Tg.same_shape(O);
    L.same_shape(O);
    G.same_shape(O);
    L.writeable();
    G.writeable();
    no_overlap(L, {&O, &Tg, &G});
    no_overlap(G, {&O, &Tg, &L});
    const i64 n = O.size();
    if (dt == DT::f32) {
        const float *o = O.in<float>(), *t = Tg.in<float>();
        float *l = L.out<float>(), *g = G.out<float>();
        py::gil_scoped_release nogil;
        return f(o, t, n, l, g);
    }
    const double *o = O.in<double>(), *t = Tg.in<double>();
    double *l = L.out<double>(), *g = G.out<double>();
    py::gil_scoped_release nogil;
    return f(o, t, n, l, g);
}

// int64 labels (N,) in [0, C)
Arg labels_arg(const char* op, const py::object& o, i64 N, i64 C) {
    Arg lab(op, "labels", o);
    if (!lab.arr.dtype().is(py::dtype::of<std::int64_t>()))
        fail_type(lab.where() + " must be int64, got " + std::string(py::str(lab.arr.dtype())));
    lab.shape1(N);
    const std::int64_t* p = lab.in<std::int64_t>();
    for (i64 i = 0; i < N; ++i)
        if (p[i] < 0 || p[i] >= C)
            fail_value(lab.where() + "[" + std::to_string(i) + "] = " + std::to_string(p[i]) + " is outside [0, " +
                       std::to_string(C) + ")");
    return lab;
}

// ---------------------------------------------------------------------------- optimizers
struct OptArgs {
    std::vector<Arg> all;  // p, g, then the state buffers
    DT dt;
};

OptArgs opt_args(const char* op, const py::object& p, const py::object& g,
                 std::initializer_list<std::pair<const char*, std::pair<py::object, bool>>> states) {
    OptArgs r;
    r.all.emplace_back(op, "p", p);
    r.all.emplace_back(op, "g", g);
    for (const auto& s : states) r.all.emplace_back(op, s.first, s.second.first, !s.second.second);
    r.dt = r.all[0].float_dtype();
    for (auto& a : r.all) {
        a.expect(r.dt);
        a.same_size(r.all[0]);
    }
    for (size_t i = 0; i < r.all.size(); ++i) {
        if (i != 1) r.all[i].writeable();
        for (size_t j = i + 1; j < r.all.size(); ++j) {
            const Arg& a = r.all[i];
            const Arg& b = r.all[j];
            if (a.present && b.present && a.arr.nbytes() && b.arr.nbytes() && a.begin() < b.end() && b.begin() < a.end())
                fail_value(std::string(op) + ": " + a.name + " and " + b.name + " overlap in memory");
        }
    }
    return r;
}

template <class T> T* ptr(OptArgs& r, size_t i) { return r.all[i].template out<T>(); }
template <class T> const T* cptr(OptArgs& r, size_t i) { return r.all[i].template in<T>(); }

void check_step(const char* op, i64 step) {
    if (step < 1) fail_value(std::string(op) + ": step counts from 1, got " + std::to_string(step));
}

// Run the statements with T = float or T = double, from the runtime dtype.
#define FASTMLP_BOTH(dt, ...)                    \
    if ((dt) == DT::f32) {                       \
        using T = float;                         \
        __VA_ARGS__                              \
    } else {                                     \
        using T = double;                        \
        __VA_ARGS__                              \
    }

}  // namespace

PYBIND11_MODULE(FASTMLP_MODULE, m) {
    m.doc() = "fastmlp cpp backend kernels (C++17, OpenBLAS GEMMs). Use through fastmlp.get_backend('cpp').";

#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    m.attr("isa") = "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
    m.attr("isa") = "avx2+fma";
#elif defined(__AVX__)
    m.attr("isa") = "avx";
#else
    m.attr("isa") = "sse2";
#endif
    m.def("cpu_supports", [](const std::string& isa) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        if (isa == "avx2") return avx2;
        if (isa == "avx512")
            return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
                   && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
        fail_value("cpu_supports: isa must be 'avx2' or 'avx512'");
#endif
        return false;
    }, "True if this CPU runs fastmlp._C_<isa> (isa: 'avx2' or 'avx512').");

    m.def("set_num_threads", [](int n) {
        if (n < 1) fail_value("set_num_threads: need a positive thread count");
        fastmlp::set_num_threads(n);
    }, "n"_a, "Threads of the backend's pool: GEMMs split by rows, elementwise loops, optimizer chunks (1: all on the caller).");
    m.def("get_num_threads", &fastmlp::get_num_threads);
    m.def("blas_set_num_threads", [](int n) {
        if (n < 1) fail_value("blas_set_num_threads: need a positive thread count");
        scipy_openblas_set_num_threads(n);
    }, "n"_a);
    m.def("blas_get_num_threads", [] { return scipy_openblas_get_num_threads(); });
    m.def("blas_config", [] { return std::string(scipy_openblas_get_config()); });
    m.def("all_finite", [](const py::object& Xo) {
        Arg X("all_finite", "X", Xo);
        const DT dt = X.float_dtype();
        return dt == DT::f32 ? fastmlp::all_finite(X.in<float>(), X.size()) : fastmlp::all_finite(X.in<double>(), X.size());
    }, "X"_a.noconvert(), "True if X (float32/float64, C-contiguous, any shape) holds no NaN or Inf.");
    m.def("vexp", [](const py::object& Z, const py::object& Y) {
        unary("vexp", Z, Y, [](auto z, auto y, i64 n) { for (i64 i = 0; i < n; ++i) y[i] = fastmlp::vexp(z[i]); });
    }, "Z"_a.noconvert(), "Y"_a.noconvert(), "Y = e^Z with the kernels' vectorised exp (tests).");

    // ------------------------------------------------------------------ elementwise activations
#define FASTMLP_UNARY(NAME, CALL, ...)                                                                      \
    m.def(#NAME, [](const py::object& Z, const py::object& Y __VA_OPT__(,) __VA_ARGS__) {                  \
        unary(#NAME, Z, Y, [&](auto z, auto y, i64 n) { using T = std::remove_const_t<std::remove_pointer_t<decltype(z)>>; CALL; }); \
    })
    FASTMLP_UNARY(relu_forward, fastmlp::relu_forward<T>(z, y, n));
    FASTMLP_UNARY(sigmoid_forward, fastmlp::sigmoid_forward<T>(z, y, n));
    FASTMLP_UNARY(tanh_forward, fastmlp::tanh_forward<T>(z, y, n));
    FASTMLP_UNARY(leaky_relu_forward, fastmlp::leaky_relu_forward<T>(z, y, n, T(s)), double s);
    FASTMLP_UNARY(elu_forward, fastmlp::elu_forward<T>(z, y, n, T(a)), double a);
    FASTMLP_UNARY(selu_forward, fastmlp::selu_forward<T>(z, y, n));
    FASTMLP_UNARY(softsign_forward, fastmlp::softsign_forward<T>(z, y, n));
    FASTMLP_UNARY(log_sigmoid_forward, fastmlp::log_sigmoid_forward<T>(z, y, n));
    FASTMLP_UNARY(mish_forward, fastmlp::mish_forward<T>(z, y, n));
    FASTMLP_UNARY(gelu_forward, fastmlp::gelu_forward<T>(z, y, n, tanh_approx), bool tanh_approx);
    FASTMLP_UNARY(sinc_forward, fastmlp::sinc_forward<T>(z, y, n, normalized), bool normalized);
    FASTMLP_UNARY(step_forward, fastmlp::step_forward<T>(z, y, n));
    FASTMLP_UNARY(softplus_forward, fastmlp::softplus_forward<T>(z, y, n, T(beta), T(threshold)), double beta, double threshold);
    FASTMLP_UNARY(silu_forward, fastmlp::silu_forward<T>(z, y, n, T(beta)), double beta);
#undef FASTMLP_UNARY

#define FASTMLP_BINARY(NAME, CALL, ...)                                                                     \
    m.def(#NAME, [](const py::object& dY, const py::object& Z, const py::object& Y, const py::object& dZ   \
                    __VA_OPT__(,) __VA_ARGS__) {                                                            \
        return binary(#NAME, dY, Z, Y, dZ, [&](auto dy, auto z, auto y, auto dz, i64 n) -> double {        \
            using T = std::remove_pointer_t<decltype(dz)>;                                                  \
            (void)z; (void)y;                                                                               \
            CALL;                                                                                           \
        });                                                                                                 \
    })
    FASTMLP_BINARY(relu_backward, fastmlp::relu_backward<T>(dy, z, y, dz, n); return 0.0);
    FASTMLP_BINARY(sigmoid_backward, fastmlp::sigmoid_backward<T>(dy, z, y, dz, n); return 0.0);
    FASTMLP_BINARY(tanh_backward, fastmlp::tanh_backward<T>(dy, z, y, dz, n); return 0.0);
    FASTMLP_BINARY(leaky_relu_backward, fastmlp::leaky_relu_backward<T>(dy, z, y, dz, n, T(s)); return 0.0, double s);
    FASTMLP_BINARY(elu_backward, fastmlp::elu_backward<T>(dy, z, y, dz, n, T(a)); return 0.0, double a);
    FASTMLP_BINARY(selu_backward, fastmlp::selu_backward<T>(dy, z, y, dz, n); return 0.0);
    FASTMLP_BINARY(softsign_backward, fastmlp::softsign_backward<T>(dy, z, y, dz, n); return 0.0);
    FASTMLP_BINARY(log_sigmoid_backward, fastmlp::log_sigmoid_backward<T>(dy, z, y, dz, n); return 0.0);
    FASTMLP_BINARY(mish_backward, fastmlp::mish_backward<T>(dy, z, y, dz, n); return 0.0);
    FASTMLP_BINARY(gelu_backward, fastmlp::gelu_backward<T>(dy, z, y, dz, n, tanh_approx); return 0.0, bool tanh_approx);
    FASTMLP_BINARY(sinc_backward, fastmlp::sinc_backward<T>(dy, z, y, dz, n, normalized); return 0.0, bool normalized);
    FASTMLP_BINARY(step_backward, fastmlp::step_backward<T>(dy, z, y, dz, n); return 0.0);
    FASTMLP_BINARY(softplus_backward,
                   return fastmlp::softplus_backward<T>(dy, z, y, dz, n, T(beta), T(threshold), param_grad),
                   double beta, double threshold, bool param_grad);
    FASTMLP_BINARY(silu_backward, return fastmlp::silu_backward<T>(dy, z, y, dz, n, T(beta), param_grad),
                   double beta, bool param_grad);
#undef FASTMLP_BINARY

    m.def("prelu_forward", [](const py::object& Zo, const py::object& Ao, const py::object& Yo) {
        const char* op = "prelu_forward";
        Arg Z(op, "Z", Zo), Al(op, "alpha", Ao), Y(op, "Y", Yo);
        DT dt = Z.float_dtype();
        Al.expect(dt);
        Y.expect(dt);
        Y.writeable();
        Y.same_shape(Z);
        no_overlap(Y, {&Z, &Al});
        auto [rows, F] = rows_cols(Z);
        if (Al.ndim() != 1 || (Al.size() != 1 && Al.size() != F))
            fail_value(Al.where() + " must have shape (1,) or (" + std::to_string(F) + ",), got " + shape_str(Al.arr));
        const i64 A = Al.size();
        FASTMLP_BOTH(dt, {
            const T *z = Z.in<T>(), *a = Al.in<T>();
            T* y = Y.out<T>();
            py::gil_scoped_release nogil;
            fastmlp::prelu_forward<T>(z, a, y, rows, F, A);
        })
    }, "Z"_a.noconvert(), "alpha"_a.noconvert(), "Y"_a.noconvert());

    m.def("prelu_backward", [](const py::object& dYo, const py::object& Zo, const py::object& Ao, const py::object& dZo,
                               const py::object& dAo) {
        const char* op = "prelu_backward";
        Arg dY(op, "dY", dYo), Z(op, "Z", Zo), Al(op, "alpha", Ao), dZ(op, "dZ", dZo), dA(op, "dalpha", dAo, true);
        DT dt = dY.float_dtype();
        for (Arg* a : {&Z, &Al, &dZ, &dA}) a->expect(dt);
        Z.same_shape(dY);
        dZ.same_shape(dY);
        dZ.writeable();
        dA.writeable();
        auto [rows, F] = rows_cols(Z);
        if (Al.ndim() != 1 || (Al.size() != 1 && Al.size() != F))
            fail_value(Al.where() + " must have shape (1,) or (" + std::to_string(F) + ",), got " + shape_str(Al.arr));
        dA.same_shape(Al);
        no_overlap(dZ, {&dY, &Z, &Al, &dA});
        no_overlap(dA, {&dY, &Z, &Al, &dZ});
        const i64 A = Al.size();
        FASTMLP_BOTH(dt, {
            const T *dy = dY.in<T>(), *z = Z.in<T>(), *a = Al.in<T>();
            T *dz = dZ.out<T>(), *da = dA.out<T>();
            py::gil_scoped_release nogil;
            fastmlp::prelu_backward<T>(dy, z, a, dz, da, rows, F, A);
        })
    }, "dY"_a.noconvert(), "Z"_a.noconvert(), "alpha"_a.noconvert(), "dZ"_a.noconvert(), "dalpha"_a.noconvert().none(true));

    // softmax / log_softmax along the last axis
#define FASTMLP_ROWS_FWD(NAME)                                                        \
    m.def(#NAME, [](const py::object& Zo, const py::object& Yo) {                     \
        Arg Z(#NAME, "Z", Zo), Y(#NAME, "Y", Yo);                                     \
        DT dt = Z.float_dtype();                                                      \
        Y.expect(dt);                                                                 \
        Y.writeable();                                                                \
        Y.same_shape(Z);                                                              \
        no_overlap(Y, {&Z});                                                          \
        auto [rows, C] = rows_cols(Z);                                                \
        FASTMLP_BOTH(dt, {                                                            \
            const T* z = Z.in<T>();                                                   \
            T* y = Y.out<T>();                                                        \
            py::gil_scoped_release nogil;                                             \
            fastmlp::NAME<T>(z, y, rows, C);                                          \
        })                                                                            \
    }, "Z"_a.noconvert(), "Y"_a.noconvert())
#define FASTMLP_ROWS_BWD(NAME)                                                                          \
    m.def(#NAME, [](const py::object& dYo, const py::object& Yo, const py::object& dZo) {               \
        Arg dY(#NAME, "dY", dYo), Y(#NAME, "Y", Yo), dZ(#NAME, "dZ", dZo);                              \
        DT dt = dY.float_dtype();                                                                       \
        Y.expect(dt);                                                                                   \
        dZ.expect(dt);                                                                                  \
        dZ.writeable();                                                                                 \
        Y.same_shape(dY);                                                                               \
        dZ.same_shape(dY);                                                                              \
        no_overlap(dZ, {&dY, &Y});                                                                      \
        auto [rows, C] = rows_cols(dY);                                                                 \
        FASTMLP_BOTH(dt, {                                                                              \
            const T *dy = dY.in<T>(), *y = Y.in<T>();                                                   \
            T* dz = dZ.out<T>();                                                                        \
            py::gil_scoped_release nogil;                                                               \
            fastmlp::NAME<T>(dy, y, dz, rows, C);                                                       \
        })                                                                                              \
    }, "dY"_a.noconvert(), "Y"_a.noconvert(), "dZ"_a.noconvert())
    FASTMLP_ROWS_FWD(softmax_forward);
    FASTMLP_ROWS_FWD(log_softmax_forward);
    FASTMLP_ROWS_BWD(softmax_backward);
    FASTMLP_ROWS_BWD(log_softmax_backward);
#undef FASTMLP_ROWS_FWD
#undef FASTMLP_ROWS_BWD

    // ------------------------------------------------------------------ dense
    m.def("dense_forward", [](const py::object& Xo, const py::object& Wo, const py::object& bo, const py::object& Yo,
                              int act) {
        const char* op = "dense_forward";
        Arg X(op, "X", Xo), W(op, "W", Wo), b(op, "b", bo, true), Y(op, "Y", Yo);
        Act a = act_code(op, act);
        DT dt = X.float_dtype();
        for (Arg* x : {&W, &b, &Y}) x->expect(dt);
        if (X.ndim() != 2) fail_value(X.where() + " must be 2-D (N, in), got " + shape_str(X.arr));
        if (W.ndim() != 2) fail_value(W.where() + " must be 2-D (out, in), got " + shape_str(W.arr));
        const i64 N = X.dim(0), in = X.dim(1), out = W.dim(0);
        W.shape2(out, in);
        b.shape1(out);
        Y.shape2(N, out);
        for (i64 v : {N, in, out}) check_blas_dim(op, v);
        Y.writeable();
        no_overlap(Y, {&X, &W, &b});
        FASTMLP_BOTH(dt, {
            const T *x = X.in<T>(), *w = W.in<T>(), *bb = b.in<T>();
            T* y = Y.out<T>();
            py::gil_scoped_release nogil;
            fastmlp::dense_forward<T>(x, w, bb, y, N, in, out, a);
        })
    }, "X"_a.noconvert(), "W"_a.noconvert(), "b"_a.noconvert().none(true), "Y"_a.noconvert(), "act"_a,
       "Y = act(X W^T + b), act a fused activation code (0 identity, 1 relu, 2 sigmoid, 3 tanh).");

    m.def("dense_backward", [](const py::object& dYo, const py::object& Xo, const py::object& Wo, const py::object& Yo,
                               int act, const py::object& dWo, const py::object& dbo, const py::object& dXo) {
        const char* op = "dense_backward";
        Arg dY(op, "dY", dYo), X(op, "X", Xo), W(op, "W", Wo), Y(op, "Y", Yo);
        Arg dW(op, "dW", dWo), db(op, "db", dbo, true), dX(op, "dX", dXo, true);
        Act a = act_code(op, act);
        if (a != Act::identity && a != Act::relu && a != Act::sigmoid && a != Act::tanh)
            fail_value(std::string(op) + ": only identity, relu, sigmoid and tanh are fused (their gradient needs Y only)");
        DT dt = dY.float_dtype();
        for (Arg* x : {&X, &W, &Y, &dW, &db, &dX}) x->expect(dt);
        if (X.ndim() != 2) fail_value(X.where() + " must be 2-D (N, in), got " + shape_str(X.arr));
        if (W.ndim() != 2) fail_value(W.where() + " must be 2-D (out, in), got " + shape_str(W.arr));
        const i64 N = X.dim(0), in = X.dim(1), out = W.dim(0);
        W.shape2(out, in);
        dY.shape2(N, out);
        Y.shape2(N, out);
        dW.shape2(out, in);
        db.shape1(out);
        dX.shape2(N, in);
        for (i64 v : {N, in, out}) check_blas_dim(op, v);
        for (Arg* o : {&dW, &db, &dX}) o->writeable();
        no_overlap(dW, {&dY, &X, &W, &Y, &db, &dX});
        no_overlap(db, {&dY, &X, &W, &Y, &dW, &dX});
        no_overlap(dX, {&dY, &X, &W, &Y, &dW, &db});
        FASTMLP_BOTH(dt, {
            const T *dy = dY.in<T>(), *x = X.in<T>(), *w = W.in<T>(), *y = Y.in<T>();
            T *dw = dW.out<T>(), *dbp = db.out<T>(), *dx = dX.out<T>();
            py::gil_scoped_release nogil;
            std::vector<T> scratch(a == Act::identity ? 0 : size_t(N * out));
            fastmlp::dense_backward<T>(dy, x, w, y, dw, dbp, dx, scratch.data(), N, in, out, a);
        })
    }, "dY"_a.noconvert(), "X"_a.noconvert(), "W"_a.noconvert(), "Y"_a.noconvert(), "act"_a, "dW"_a.noconvert(),
       "db"_a.noconvert().none(true), "dX"_a.noconvert().none(true),
       "dZ = dY act'(Y); dW = dZ^T X, db = sum_n dZ, dX = dZ W, written in place (db, dX optional).");

    // ------------------------------------------------------------------ losses
    // r: the gradient scale (1/count for "mean", else 1). Returns sum_n L_n.
    m.def("mse_loss", [](const py::object& O, const py::object& Tg, double r, const py::object& L, const py::object& G) {
        return loss_same("mse_loss", O, Tg, L, G, [&](auto o, auto t, i64 n, auto l, auto g) {
            using T = std::remove_pointer_t<decltype(l)>;
            return fastmlp::mse_loss<T>(o, t, n, T(r), l, g);
        });
    }, "output"_a.noconvert(), "target"_a.noconvert(), "r"_a, "L"_a.noconvert().none(true), "G"_a.noconvert().none(true));
    m.def("l1_loss", [](const py::object& O, const py::object& Tg, double r, const py::object& L, const py::object& G) {
        return loss_same("l1_loss", O, Tg, L, G, [&](auto o, auto t, i64 n, auto l, auto g) {
            using T = std::remove_pointer_t<decltype(l)>;
            return fastmlp::l1_loss<T>(o, t, n, T(r), l, g);
        });
    }, "output"_a.noconvert(), "target"_a.noconvert(), "r"_a, "L"_a.noconvert().none(true), "G"_a.noconvert().none(true));
    m.def("huber_loss", [](const py::object& O, const py::object& Tg, double r, double delta, const py::object& L,
                           const py::object& G) {
        return loss_same("huber_loss", O, Tg, L, G, [&](auto o, auto t, i64 n, auto l, auto g) {
            using T = std::remove_pointer_t<decltype(l)>;
            return fastmlp::huber_loss<T>(o, t, n, T(r), T(delta), l, g);
        });
    }, "output"_a.noconvert(), "target"_a.noconvert(), "r"_a, "delta"_a, "L"_a.noconvert().none(true),
       "G"_a.noconvert().none(true));
    m.def("bce_with_logits_loss", [](const py::object& O, const py::object& Tg, double r, const py::object& L,
                                     const py::object& G) {
        return loss_same("bce_with_logits_loss", O, Tg, L, G, [&](auto o, auto t, i64 n, auto l, auto g) {
            using T = std::remove_pointer_t<decltype(l)>;
            return fastmlp::bce_with_logits_loss<T>(o, t, n, T(r), l, g);
        });
    }, "output"_a.noconvert(), "target"_a.noconvert(), "r"_a, "L"_a.noconvert().none(true), "G"_a.noconvert().none(true));
    m.def("bce_loss", [](const py::object& O, const py::object& Tg, double r, const py::object& L, const py::object& G) {
        return loss_same("bce_loss", O, Tg, L, G, [&](auto o, auto t, i64 n, auto l, auto g) {
            using T = std::remove_pointer_t<decltype(l)>;
            return fastmlp::bce_loss<T>(o, t, n, T(r), l, g);
        });
    }, "output"_a.noconvert(), "target"_a.noconvert(), "r"_a, "L"_a.noconvert().none(true), "G"_a.noconvert().none(true));

    m.def("cross_entropy_loss", [](const py::object& Zo, const py::object& labo, const py::object& Po,
                                   double label_smoothing, double r, const py::object& Lo, const py::object& Go) {
        const char* op = "cross_entropy_loss";
        Arg Z(op, "logits", Zo), P(op, "probs", Po, true), L(op, "L", Lo, true), G(op, "G", Go, true);
        DT dt = Z.float_dtype();
        for (Arg* x : {&P, &L, &G}) x->expect(dt);
        if (Z.ndim() != 2) fail_value(Z.where() + " must be 2-D (N, C), got " + shape_str(Z.arr));
        const i64 N = Z.dim(0), C = Z.dim(1);
        if (N < 1 || C < 1) fail_value(std::string(op) + ": empty logits");
        if (labo.is_none() == !P.present) fail_value(std::string(op) + ": give labels or probs (exactly one)");
        if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0)) fail_value(std::string(op) + ": label_smoothing outside [0, 1]");
        Arg lab = labo.is_none() ? Arg(op, "labels", labo, true) : labels_arg(op, labo, N, C);
        P.same_shape(Z);
        L.shape1(N);
        G.same_shape(Z);
        L.writeable();
        G.writeable();
        no_overlap(L, {&Z, &P, &G, &lab});
        no_overlap(G, {&Z, &P, &L, &lab});
        FASTMLP_BOTH(dt, {
            const T *z = Z.in<T>(), *p = P.in<T>();
            const std::int64_t* t = lab.in<std::int64_t>();
            T *l = L.out<T>(), *g = G.out<T>();
            py::gil_scoped_release nogil;
            return fastmlp::cross_entropy_loss<T>(z, t, p, N, C, T(label_smoothing), T(r), l, g);
        })
    }, "logits"_a.noconvert(), "labels"_a.noconvert().none(true), "probs"_a.noconvert().none(true), "label_smoothing"_a,
       "r"_a, "L"_a.noconvert().none(true), "G"_a.noconvert().none(true));

    m.def("nll_loss", [](const py::object& LPo, const py::object& labo, double r, const py::object& Lo, const py::object& Go) {
        const char* op = "nll_loss";
        Arg LP(op, "logp", LPo), L(op, "L", Lo, true), G(op, "G", Go, true);
        DT dt = LP.float_dtype();
        L.expect(dt);
        G.expect(dt);
        if (LP.ndim() != 2) fail_value(LP.where() + " must be 2-D (N, C), got " + shape_str(LP.arr));
        const i64 N = LP.dim(0), C = LP.dim(1);
        if (N < 1 || C < 1) fail_value(std::string(op) + ": empty log-probabilities");
        Arg lab = labels_arg(op, labo, N, C);
        L.shape1(N);
        G.same_shape(LP);
        L.writeable();
        G.writeable();
        no_overlap(L, {&LP, &G, &lab});
        no_overlap(G, {&LP, &L, &lab});
        FASTMLP_BOTH(dt, {
            const T* lp = LP.in<T>();
            const std::int64_t* t = lab.in<std::int64_t>();
            T *l = L.out<T>(), *g = G.out<T>();
            py::gil_scoped_release nogil;
            return fastmlp::nll_loss<T>(lp, t, N, C, T(r), l, g);
        })
    }, "logp"_a.noconvert(), "labels"_a.noconvert(), "r"_a, "L"_a.noconvert().none(true), "G"_a.noconvert().none(true));

    // ------------------------------------------------------------------ optimizers
    m.def("sgd_step", [](const py::object& p, const py::object& g, const py::object& buf, double lr, i64 step,
                         double momentum, double dampening, bool nesterov, double weight_decay) {
        check_step("sgd_step", step);
        auto r = opt_args("sgd_step", p, g, {{"momentum_buffer", {buf, momentum != 0.0}}});
        FASTMLP_BOTH(r.dt, {
            T *pp = ptr<T>(r, 0), *b = momentum != 0.0 ? ptr<T>(r, 2) : nullptr;
            const T* gg = cptr<T>(r, 1);
            const i64 n = r.all[0].size();
            py::gil_scoped_release nogil;
            fastmlp::sgd_step<T>(pp, gg, b, n, lr, step, momentum, dampening, nesterov, weight_decay);
        })
    }, "p"_a.noconvert(), "g"_a.noconvert(), "momentum_buffer"_a.noconvert().none(true), "lr"_a, "step"_a, "momentum"_a,
       "dampening"_a, "nesterov"_a, "weight_decay"_a);

    m.def("momentum_step", [](const py::object& p, const py::object& g, const py::object& mo, double lr, i64 step,
                              double beta, bool bias_correction, bool nesterov, double weight_decay) {
        check_step("momentum_step", step);
        auto r = opt_args("momentum_step", p, g, {{"m", {mo, true}}});
        FASTMLP_BOTH(r.dt, {
            T *pp = ptr<T>(r, 0), *mm = ptr<T>(r, 2);
            const T* gg = cptr<T>(r, 1);
            const i64 n = r.all[0].size();
            py::gil_scoped_release nogil;
            fastmlp::momentum_step<T>(pp, gg, mm, n, lr, step, beta, bias_correction, nesterov, weight_decay);
        })
    }, "p"_a.noconvert(), "g"_a.noconvert(), "m"_a.noconvert(), "lr"_a, "step"_a, "beta"_a, "bias_correction"_a,
       "nesterov"_a, "weight_decay"_a);

    m.def("adagrad_step", [](const py::object& p, const py::object& g, const py::object& s, double lr, i64 step,
                             double lr_decay, double weight_decay, double eps, double eps_root) {
        check_step("adagrad_step", step);
        auto r = opt_args("adagrad_step", p, g, {{"state_sum", {s, true}}});
        FASTMLP_BOTH(r.dt, {
            T *pp = ptr<T>(r, 0), *ss = ptr<T>(r, 2);
            const T* gg = cptr<T>(r, 1);
            const i64 n = r.all[0].size();
            py::gil_scoped_release nogil;
            fastmlp::adagrad_step<T>(pp, gg, ss, n, lr, step, lr_decay, weight_decay, eps, eps_root);
        })
    }, "p"_a.noconvert(), "g"_a.noconvert(), "state_sum"_a.noconvert(), "lr"_a, "step"_a, "lr_decay"_a,
       "weight_decay"_a, "eps"_a, "eps_root"_a);

    m.def("rmsprop_step", [](const py::object& p, const py::object& g, const py::object& v, const py::object& ga,
                             const py::object& buf, double lr, i64 step, double alpha, double eps, double weight_decay,
                             double momentum, bool centered, bool bias_correction, double eps_root) {
        check_step("rmsprop_step", step);
        auto r = opt_args("rmsprop_step", p, g,
                          {{"square_avg", {v, true}}, {"grad_avg", {ga, centered}}, {"momentum_buffer", {buf, momentum != 0.0}}});
        FASTMLP_BOTH(r.dt, {
            T *pp = ptr<T>(r, 0), *vv = ptr<T>(r, 2), *gav = centered ? ptr<T>(r, 3) : nullptr;
            T* bb = momentum != 0.0 ? ptr<T>(r, 4) : nullptr;
            const T* gg = cptr<T>(r, 1);
            const i64 n = r.all[0].size();
            py::gil_scoped_release nogil;
            fastmlp::rmsprop_step<T>(pp, gg, vv, gav, bb, n, lr, step, alpha, eps, weight_decay, momentum, centered,
                                     bias_correction, eps_root);
        })
    }, "p"_a.noconvert(), "g"_a.noconvert(), "square_avg"_a.noconvert(), "grad_avg"_a.noconvert().none(true),
       "momentum_buffer"_a.noconvert().none(true), "lr"_a, "step"_a, "alpha"_a, "eps"_a, "weight_decay"_a, "momentum"_a,
       "centered"_a, "bias_correction"_a, "eps_root"_a);

    m.def("adam_step", [](const py::object& p, const py::object& g, const py::object& m1, const py::object& v,
                          const py::object& vmax, double lr, i64 step, double beta1, double beta2, double eps,
                          double weight_decay, bool amsgrad, bool decoupled_weight_decay, double eps_root) {
        check_step("adam_step", step);
        auto r = opt_args("adam_step", p, g, {{"exp_avg", {m1, true}}, {"exp_avg_sq", {v, true}}, {"max_exp_avg_sq", {vmax, amsgrad}}});
        FASTMLP_BOTH(r.dt, {
            T *pp = ptr<T>(r, 0), *mm = ptr<T>(r, 2), *vv = ptr<T>(r, 3), *vm = amsgrad ? ptr<T>(r, 4) : nullptr;
            const T* gg = cptr<T>(r, 1);
            const i64 n = r.all[0].size();
            py::gil_scoped_release nogil;
            fastmlp::adam_step<T>(pp, gg, mm, vv, vm, n, lr, step, beta1, beta2, eps, weight_decay, amsgrad,
                                  decoupled_weight_decay, eps_root);
        })
    }, "p"_a.noconvert(), "g"_a.noconvert(), "exp_avg"_a.noconvert(), "exp_avg_sq"_a.noconvert(),
       "max_exp_avg_sq"_a.noconvert().none(true), "lr"_a, "step"_a, "beta1"_a, "beta2"_a, "eps"_a, "weight_decay"_a,
       "amsgrad"_a, "decoupled_weight_decay"_a, "eps_root"_a);

    m.def("adamax_step", [](const py::object& p, const py::object& g, const py::object& m1, const py::object& u,
                            double lr, i64 step, double beta1, double beta2, double eps, double weight_decay) {
        check_step("adamax_step", step);
        auto r = opt_args("adamax_step", p, g, {{"exp_avg", {m1, true}}, {"exp_inf", {u, true}}});
        FASTMLP_BOTH(r.dt, {
            T *pp = ptr<T>(r, 0), *mm = ptr<T>(r, 2), *uu = ptr<T>(r, 3);
            const T* gg = cptr<T>(r, 1);
            const i64 n = r.all[0].size();
            py::gil_scoped_release nogil;
            fastmlp::adamax_step<T>(pp, gg, mm, uu, n, lr, step, beta1, beta2, eps, weight_decay);
        })
    }, "p"_a.noconvert(), "g"_a.noconvert(), "exp_avg"_a.noconvert(), "exp_inf"_a.noconvert(), "lr"_a, "step"_a,
       "beta1"_a, "beta2"_a, "eps"_a, "weight_decay"_a);

    m.def("nadam_step", [](const py::object& p, const py::object& g, const py::object& m1, const py::object& v, double lr,
                           i64 step, double mu_product, double beta1, double beta2, double eps, double weight_decay,
                           double momentum_decay, bool decoupled_weight_decay) {
        check_step("nadam_step", step);
        auto r = opt_args("nadam_step", p, g, {{"exp_avg", {m1, true}}, {"exp_avg_sq", {v, true}}});
        FASTMLP_BOTH(r.dt, {
            T *pp = ptr<T>(r, 0), *mm = ptr<T>(r, 2), *vv = ptr<T>(r, 3);
            const T* gg = cptr<T>(r, 1);
            const i64 n = r.all[0].size();
            py::gil_scoped_release nogil;
            fastmlp::nadam_step<T>(pp, gg, mm, vv, n, lr, step, mu_product, beta1, beta2, eps, weight_decay,
                                   momentum_decay, decoupled_weight_decay);
        })
    }, "p"_a.noconvert(), "g"_a.noconvert(), "exp_avg"_a.noconvert(), "exp_avg_sq"_a.noconvert(), "lr"_a, "step"_a,
       "mu_product"_a, "beta1"_a, "beta2"_a, "eps"_a, "weight_decay"_a, "momentum_decay"_a, "decoupled_weight_decay"_a);

    m.def("adadelta_step", [](const py::object& p, const py::object& g, const py::object& s, const py::object& d,
                              double lr, i64 step, double rho, double eps, double weight_decay) {
        check_step("adadelta_step", step);
        auto r = opt_args("adadelta_step", p, g, {{"square_avg", {s, true}}, {"acc_delta", {d, true}}});
        FASTMLP_BOTH(r.dt, {
            T *pp = ptr<T>(r, 0), *ss = ptr<T>(r, 2), *dd = ptr<T>(r, 3);
            const T* gg = cptr<T>(r, 1);
            const i64 n = r.all[0].size();
            py::gil_scoped_release nogil;
            fastmlp::adadelta_step<T>(pp, gg, ss, dd, n, lr, step, rho, eps, weight_decay);
        })
    }, "p"_a.noconvert(), "g"_a.noconvert(), "square_avg"_a.noconvert(), "acc_delta"_a.noconvert(), "lr"_a, "step"_a,
       "rho"_a, "eps"_a, "weight_decay"_a);

    // ------------------------------------------------------------------ whole step
    // layers: int64 (L, 6) rows [kind, in, out, w_off, b_off, act]; layer_hyper: float64 (L, 2).
    // loss_kind: 0 cross_entropy, 1 mse, 2 l1, 3 huber, 4 bce_with_logits; mean: bool; loss_h.
    // opt_kind: see fastmlp::Opt; opt_hyper: float64 (8,). Returns (value, finite).
    m.def("train_step", [](const py::object& Xo, const py::object& labo, const py::object& tgo, const py::object& layo,
                           const py::object& lhypo, int loss_kind, bool mean, double loss_h, const py::object& paro,
                           const py::object& gro, int opt_kind, const py::object& ohypo, i64 step, const py::object& s0o,
                           const py::object& s1o, const py::object& s2o) {
        const char* op = "train_step";
        Arg X(op, "X", Xo), tg(op, "target", tgo, true), lay(op, "layers", layo), lh(op, "layer_hyper", lhypo);
        Arg par(op, "params", paro), gr(op, "grads", gro), oh(op, "opt_hyper", ohypo);
        Arg s0(op, "state0", s0o, true), s1(op, "state1", s1o, true), s2(op, "state2", s2o, true);
        check_step(op, step);
        DT dt = X.float_dtype();
        for (Arg* a : {&tg, &par, &gr, &s0, &s1, &s2}) a->expect(dt);
        if (X.ndim() != 2) fail_value(X.where() + " must be 2-D (N, in), got " + shape_str(X.arr));
        const i64 N = X.dim(0);
        if (N < 1) fail_value(std::string(op) + ": empty batch");
        if (!lay.arr.dtype().is(py::dtype::of<std::int64_t>()) || lay.ndim() != 2 || lay.dim(1) != 6 || lay.dim(0) < 1)
            fail_value(lay.where() + " must be int64 of shape (L, 6), L >= 1");
        const i64 L = lay.dim(0);
        if (!lh.arr.dtype().is(py::dtype::of<double>())) fail_type(lh.where() + " must be float64");
        lh.shape2(L, 2);
        if (!oh.arr.dtype().is(py::dtype::of<double>())) fail_type(oh.where() + " must be float64");
        oh.shape1(8);
        if (par.ndim() != 1) fail_value(par.where() + " must be the flat (1-D) parameter arena");
        const i64 P = par.size();
        gr.shape1(P);
        for (Arg* a : {&s0, &s1, &s2}) a->shape1(P);
        for (Arg* a : {&par, &gr, &s0, &s1, &s2}) a->writeable();
        const Arg* all[] = {&X, &tg, &par, &gr, &s0, &s1, &s2};
        for (int i = 0; i < 7; ++i)
            for (int j = i + 1; j < 7; ++j)
                if (const Arg *a = all[i], *b = all[j]; a->present && b->present && a->arr.nbytes() && b->arr.nbytes() && a->begin() < b->end() &&
                    b->begin() < a->end())
                    fail_value(std::string(op) + ": " + a->name + " and " + b->name + " overlap in memory");

        const std::int64_t* rows = lay.in<std::int64_t>();
        const double* hy = lh.in<double>();
        std::vector<fastmlp::LayerSpec> layers(L);
        i64 width = X.dim(1);
        for (i64 l = 0; l < L; ++l) {
            const std::int64_t* q = rows + 6 * l;
            auto& s = layers[l];
            const std::string at = std::string(op) + ": layer " + std::to_string(l);
            if (q[0] != 0 && q[0] != 1) fail_value(at + ": kind must be 0 (dense) or 1 (activation)");
            s.kind = int(q[0]);
            s.in = q[1];
            s.out = q[2];
            s.w_off = q[3];
            s.b_off = q[4];
            s.act = act_code(op, int(q[5]));
            s.h1 = hy[2 * l];
            s.h2 = hy[2 * l + 1];
            if (s.in != width) fail_value(at + " expects " + std::to_string(s.in) + " inputs, gets " + std::to_string(width));
            check_blas_dim(op, s.in);
            check_blas_dim(op, s.out);
            if (s.kind == 0) {
                if (s.act != Act::identity && s.act != Act::relu && s.act != Act::sigmoid && s.act != Act::tanh)
                    fail_value(at + ": a dense layer fuses only identity, relu, sigmoid or tanh");
                if (s.w_off < 0 || s.w_off > P || s.in * s.out > P - s.w_off) fail_value(at + ": weight outside the arena");
                if (s.b_off < -1 || (s.b_off >= 0 && (s.b_off > P || s.out > P - s.b_off)))
                    fail_value(at + ": bias outside the arena");
            } else if (s.out != s.in) {
                fail_value(at + ": an activation keeps the width");
            }
            width = s.out;
        }
        if (loss_kind < 0 || loss_kind > 4) fail_value(std::string(op) + ": unknown loss code");
        const i64 C = width;
        Arg lab = labo.is_none() ? Arg(op, "labels", labo, true) : labels_arg(op, labo, N, C);
        if (loss_kind == 0) {
            if (lab.present == tg.present) fail_value(std::string(op) + ": cross-entropy needs labels or probabilities");
            tg.shape2(N, C);
            if (!(loss_h >= 0.0 && loss_h <= 1.0)) fail_value(std::string(op) + ": label_smoothing outside [0, 1]");
        } else {
            if (lab.present || !tg.present) fail_value(std::string(op) + ": this loss needs a float target like the output");
            tg.shape2(N, C);
        }
        if (opt_kind < 0 || opt_kind > 7) fail_value(std::string(op) + ": unknown optimizer code");
        const double* h = oh.in<double>();
        // state buffers each optimizer reads (see optimizer_step)
        bool need[3] = {false, false, false};
        switch (fastmlp::Opt(opt_kind)) {
            case fastmlp::Opt::sgd: need[0] = h[1] != 0.0; break;
            case fastmlp::Opt::momentum:
            case fastmlp::Opt::adagrad: need[0] = true; break;
            case fastmlp::Opt::rmsprop: need[0] = true; need[1] = h[5] != 0.0; need[2] = h[4] != 0.0; break;
            case fastmlp::Opt::adam: need[0] = need[1] = true; need[2] = h[5] != 0.0; break;
            case fastmlp::Opt::adamax:
            case fastmlp::Opt::nadam:
            case fastmlp::Opt::adadelta: need[0] = need[1] = true; break;
        }
        const Arg* st[3] = {&s0, &s1, &s2};
        for (int k = 0; k < 3; ++k)
            if (need[k] && !st[k]->present) fail_value(std::string(op) + ": the optimizer needs state buffer " + std::to_string(k));
        fastmlp::LossSpec ls{fastmlp::LossKind(loss_kind), mean, loss_h};
        fastmlp::TrainResult res{};
        FASTMLP_BOTH(dt, {
            const T *x = X.in<T>(), *t = tg.in<T>();
            const std::int64_t* lb = lab.in<std::int64_t>();
            T *pp = par.out<T>(), *gg = gr.out<T>(), *a0 = s0.out<T>(), *a1 = s1.out<T>(), *a2 = s2.out<T>();
            py::gil_scoped_release nogil;
            res = fastmlp::train_step<T>(x, N, layers, ls, lb, t, pp, gg, P, fastmlp::Opt(opt_kind), h, step, a0, a1, a2);
        })
        return py::make_tuple(res.value, res.finite);
    }, "X"_a.noconvert(), "labels"_a.noconvert().none(true), "target"_a.noconvert().none(true), "layers"_a.noconvert(),
       "layer_hyper"_a.noconvert(), "loss_kind"_a, "mean"_a, "loss_h"_a, "params"_a.noconvert(), "grads"_a.noconvert(),
       "opt_kind"_a, "opt_hyper"_a.noconvert(), "step"_a, "state0"_a.noconvert().none(true),
       "state1"_a.noconvert().none(true), "state2"_a.noconvert().none(true),
       "One training step (forward, loss, backward, optimizer) in one call; see csrc/train_step.h.");
}
