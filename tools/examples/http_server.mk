# The HTTP/1.1 example: its program and its check against curl (tools/examples/http_check.sh).

TOOLS += $(BUILD)/bin/http_server
EXAMPLES_CHECKS += examples-check-http

.PHONY: examples-check-http

examples-check-http: $(BUILD)/bin/http_server
	@command -v curl >/dev/null || sh tools/install.sh check
	bash tools/examples/http_check.sh $(BUILD)/bin
