// Broker layer: see Broker.swift
