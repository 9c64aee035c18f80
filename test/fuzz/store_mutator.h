// Mutations that understand the image store format (python/image_store.py):
// header fields, bytes of the whole file, and edits of the decompressed
// payload followed by recompression and fixed-up sizes and checksums, so that
// the reader's deep checks are reached.
#pragma once
#include <cstddef>
#include <cstdint>

#include "aotriton/status.h"

namespace store_fuzz {

// Mutates data[0, size) in place (capacity max_size); returns the new size.
size_t mutate(uint8_t* data, size_t size, size_t max_size, unsigned int seed);

// Tally of parse outcomes, printed by the driver.
void count_result(aotriton::Status s);
aotriton::Status last_result();
void print_counts();

}  // namespace store_fuzz
