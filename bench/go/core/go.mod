module kiobench/core

go 1.19
