module dispatchkit/benchmarks/go_article

go 1.19
