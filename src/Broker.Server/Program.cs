using Broker.Server.Hosting;

return await BrokerHost.RunFromCommandLineAsync(args);
