// pyaotriton: flash attention operators.
#include "binding_util.h"

namespace pyaotriton {

void bind_flash(nb::module_& m) {}

}  // namespace pyaotriton
