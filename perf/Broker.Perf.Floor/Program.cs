using System.Net;
using Broker.Perf.Floor;
using Microsoft.AspNetCore.Server.Kestrel.Core;

// The protocol floor (see the project file): the runner's target with everything but the protocol taken away.
// Usage: dotnet run -c Release --project perf/Broker.Perf.Floor -- [port]   (loopback only; default 7198)
int port = args.Length > 0 ? int.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 7198;
// The broker's own settings where they shape the protocol's cost: pool minimum, HTTP/2 windows, no size limits.
ThreadPool.GetMinThreads(out int worker, out int io);
ThreadPool.SetMinThreads(Math.Max(worker, 64), Math.Max(io, 64));
var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(kestrel =>
{
    kestrel.Listen(IPAddress.Loopback, port, listen => listen.Protocols = HttpProtocols.Http2);
    kestrel.Limits.MaxRequestBodySize = null;
    kestrel.Limits.Http2.InitialConnectionWindowSize = 16 << 20;
    kestrel.Limits.Http2.InitialStreamWindowSize = 8 << 20;
});
builder.Services.AddGrpc(grpc =>
{
    grpc.MaxReceiveMessageSize = null;
    grpc.MaxSendMessageSize = null;
});
builder.Services.AddSingleton<MemoryTopics>();
var app = builder.Build();
app.MapGrpcService<FloorPublisher>();
app.MapGrpcService<FloorConsumer>();
app.MapGrpcService<FloorAdmin>();
Console.WriteLine($"protocol floor listening on 127.0.0.1:{port} (no storage: not a broker)");
await app.RunAsync();
