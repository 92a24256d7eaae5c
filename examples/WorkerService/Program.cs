// A worker-pool service: the hosted consumer runs RequestHandler for each message of the "Broker" section's topic with
// 1 to 8 concurrent handlers, as many as the group's backlog needs (one per 50 waiting messages), and logs the pool's
// state as it changes. Listeners come from QUEUE_PLATFORM_LISTENERS (or Broker:Listeners). Ctrl+C or SIGTERM: the pool
// stops taking work, finishes what it holds, and releases the rest.
using Broker.Client;
using Microsoft.Extensions.Hosting;
using WorkerService;

// appsettings.json beside the program, wherever it is started from (dotnet run keeps the caller's folder).
var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });
builder.Services.AddBrokerWorker<RequestHandler>(builder.Configuration.GetSection("Broker"));
builder.Build().Run();
