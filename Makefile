# The two commands of the README, for those who type `make`: each sets itself up from a fresh clone.
.PHONY: demo test
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
