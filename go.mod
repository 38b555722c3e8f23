module github.com/regedge/regedge

go 1.26
