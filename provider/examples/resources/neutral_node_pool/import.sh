#!/bin/sh
# Import by region: the region's registered nodes whose hostname is a slot key
# (<region>-<n>, as the local launcher registers them) become the slots. The
# launcher settings come from the configuration at the next apply.
terraform import neutral_node_pool.jp jp
