// What an estela spider job publishes while it crawls: every scraped item to job_items, every HTTP request to
// job_requests, log lines to job_logs, and the job's stats to job_stats at the end; each message {"jid": ..., "payload": ...}
// as estela's consumers expect. Configured like estela (QUEUE_PLATFORM_LISTENERS, ...); arguments: item count (default
// 1000) and job id (default 1.1.1). Topics are created by the broker on first use.
using System.Text.Json.Serialization;
using Broker.Client;

int items = args.Length > 0 ? int.Parse(args[0]) : 1000;
string jid = args.Length > 1 ? args[1] : "1.1.1";
var started = DateTimeOffset.UtcNow;

await using var producer = new BrokerProducer(new BrokerClientOptions(), SpiderJson.Default.Options);
var json = SpiderJson.Default;
for (int i = 0; i < items; i++)
{
    string url = $"https://books.example/page/{i / 20}/item/{i}";
    // SendAsync returns once the message is buffered; the durability tasks are awaited together by FlushAsync.
    await producer.SendAsync("job_requests", new JobMessage<Request>(jid, new Request(url, "GET", 200, 0.05 + i % 7 / 100.0)), json.JobMessageRequest);
    await producer.SendAsync("job_items", new JobMessage<Item>(jid, new Item(url, $"Book {i}", 10 + i % 50)), json.JobMessageItem);
    if (i % 100 == 0)
        await producer.SendAsync("job_logs", new JobMessage<LogLine>(jid, new LogLine("INFO", $"scraped {i} item(s)")), json.JobMessageLogLine);
}
await producer.SendAsync("job_stats", new JobMessage<Stats>(jid, new Stats(items, items, (DateTimeOffset.UtcNow - started).TotalSeconds)), json.JobMessageStats);
await producer.FlushAsync();   // throws PublishFailedException listing anything that was not published
Console.WriteLine($"job {jid}: published {items} item(s), {items} request(s), {(items + 99) / 100} log line(s) and its stats");

internal sealed record JobMessage<T>(string Jid, T Payload);
internal sealed record Item(string Url, string Title, decimal Price);
internal sealed record Request(string Url, string Method, int Status, double Seconds);
internal sealed record LogLine(string Level, string Message);
internal sealed record Stats(int Items, int Requests, double ElapsedSeconds);

/// <summary>Source-generated serializers, as a trimmed producer would use.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(JobMessage<Item>))]
[JsonSerializable(typeof(JobMessage<Request>))]
[JsonSerializable(typeof(JobMessage<LogLine>))]
[JsonSerializable(typeof(JobMessage<Stats>))]
internal sealed partial class SpiderJson : JsonSerializerContext;
