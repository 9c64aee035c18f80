"""Optional integrations with other libraries. Each submodule imports its
library on its own import only: `import aotriton` never needs them."""
