module kio/bench/io/go_http

go 1.19
