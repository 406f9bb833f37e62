package config

// AdvertiseECS is the FERRY_ROUTER_ADVERTISE value that means "this ECS
// task's own private address". A tunnel must come back to the router task
// that launched its invocation (that task's pool holds the waiting
// requests), so each task advertises itself rather than a load balancer.
// router/advertise resolves it at start.
const AdvertiseECS = "ecs"

// AdvertiseECSPublic means "this ECS task's public address": for a public
// tunnel endpoint, which functions outside the VPC dial over the internet.
const AdvertiseECSPublic = "ecs-public"
