# `make data`: MNIST and Fashion-MNIST into data/mnist and data/fashion, checked
# against their MD5 sums (lua/fdm/data.lua; sources and variables: docs/data.md).
# `make test` depends on it: tests/data_spec.lua loads both data sets.
data: all
	@$(LUA_ENV) $(SAN_ENV) ./$(BUILD)/fdm -e 'local d = require "fdm.data"; for _, n in ipairs({"mnist", "fashion"}) do print(("data: %-8s %s"):format(n, d.ensure(n))) end'

TEST_DEPS += data
