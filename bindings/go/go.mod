module ibex.dev/ibex

go 1.19
