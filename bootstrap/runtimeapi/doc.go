// Package runtimeapi is a client for the AWS Lambda Runtime API
// (2018-06-01): the HTTP interface a custom runtime polls for invocations
// and answers them on.
//
// The loop a runtime runs is Next, then exactly one of Respond or Fail for
// that invocation, then Next again. Lambda freezes the sandbox once a
// response is posted and the runtime asks for the next event; the process
// is billed until then.
package runtimeapi
